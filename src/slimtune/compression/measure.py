"""What compression buys: parameters, bytes and forward latency, measured the same way before and after."""

import io
import statistics
import time

import torch
from torch import nn

LATENCY_REPEATS = 10
LATENCY_WARMUP = 2
SYNTHETIC_SHAPE = (32, 128)  # [batch, tokens] when no real data is given


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def nonzero_count(module: nn.Module) -> int:
    return sum(int(p.count_nonzero()) for p in module.parameters())


def safetensors_bytes(module: nn.Module) -> int:
    """Size of the module's weights as a model.safetensors file."""
    from safetensors.torch import save

    return len(save({k: v.contiguous() for k, v in module.state_dict().items()}))


def torch_save_bytes(module: nn.Module) -> int:
    """Size of `torch.save(state_dict)`: the one format that holds int8-packed weights and fp32 alike."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def synthetic_batch(vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, SYNTHETIC_SHAPE, generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.no_grad()
def forward_latency_ms(model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Median wall-clock milliseconds of one forward pass over `batch` (labels dropped), after warm-up."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    was_training = model.training
    model.eval()
    times = []
    for i in range(LATENCY_WARMUP + LATENCY_REPEATS):
        start = time.perf_counter()
        model(**inputs)
        if i >= LATENCY_WARMUP:
            times.append(time.perf_counter() - start)
    model.train(was_training)
    return 1000 * statistics.median(times)
