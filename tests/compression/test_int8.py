"""Int8 frozen base: per-channel weight quantization, gradients through it, and LoRA trained on top."""

import pytest
import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.lora import LoRALinear
from slimtune.methods.registry import available_methods
from slimtune.models.int8_base import Int8Linear, quantize_frozen_linears, quantize_per_channel, weight_bytes
from slimtune.runs.train import TrainRequest, train
from slimtune.tasks import get_task
from tests.conftest import build_classifier, toy_lm_batch


def test_per_channel_quantization_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    weight = torch.randn(16, 32) * torch.logspace(-2, 1, 16)[:, None]  # rows of very different scales
    quantized, scale = quantize_per_channel(weight)
    assert quantized.dtype == torch.int8 and scale.shape == (16,)
    error = (quantized.float() * scale[:, None] - weight).abs()
    assert (error <= scale[:, None] / 2 + 1e-7).all()
    assert quantized.abs().amax(dim=1).eq(127).all()  # every row uses its full range


def test_int8_linear_matches_its_dequantized_weight_in_forward_and_backward():
    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    int8 = Int8Linear(linear)
    x = torch.randn(4, 32, requires_grad=True)
    reference_x = x.detach().clone().requires_grad_(True)
    out = int8(x)
    reference = nn.functional.linear(reference_x, int8.dequantized_weight(), linear.bias)
    assert torch.allclose(out, reference, atol=1e-5)
    assert (out - linear(x)).abs().max() < 0.05  # close to the fp32 layer it replaced
    out.square().sum().backward()
    reference.square().sum().backward()
    assert torch.allclose(x.grad, reference_x.grad, atol=1e-5)
    assert not list(int8.parameters())  # nothing of the base can train


def test_lora_trains_on_an_int8_base(tiny_lm):
    model, method, params, backbone = build_classifier(tiny_lm, "lora", task="causal-lm")
    fp32_bytes = weight_bytes(model.backbone)
    assert quantize_frozen_linears(model.backbone) == 2 * 7  # every projection of both blocks
    layers = [m for m in model.backbone.modules() if isinstance(m, LoRALinear)]
    assert all(isinstance(layer.base_layer, Int8Linear) for layer in layers)
    assert weight_bytes(model.backbone) < fp32_bytes
    frozen = {n: b.clone() for n, b in model.named_buffers() if "int8" in n}
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for seed in (0, 1):
        batch = toy_lm_batch(backbone, seed=seed)
        get_task("causal-lm").loss(model(**batch), batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(layer.lora_B.abs().sum() > 0 for layer in layers)
    assert all(torch.equal(b, frozen[n]) for n, b in model.named_buffers() if "int8" in n)


def test_only_frozen_linears_are_quantized():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[0].requires_grad_(False)
    assert quantize_frozen_linears(model) == 1
    assert isinstance(model[0], Int8Linear) and type(model[1]) is nn.Linear


@pytest.mark.parametrize("method_name", [m for m in sorted(available_methods())
                                         if available_methods()[m].tasks is None
                                         or "causal-lm" in available_methods()[m].tasks])
def test_every_method_trains_on_an_int8_base_or_is_refused(tiny_lm, tmp_path, method_name):
    model, method, params, backbone = build_classifier(tiny_lm, method_name, task="causal-lm")
    if method.needs_float_base_weights:
        rows = tmp_path / "train.jsonl"
        rows.write_text('{"prompt": "a", "response": "b"}\n' * 4)
        request = TrainRequest(task="causal-lm", method=method_name, train_path=str(rows), out_dir=str(tmp_path / "o"),
                               model=tiny_lm, base_int8="int8")
        with pytest.raises(SlimtuneError, match="--base-int8 int8 keeps them only as int8"):
            train(request)
        return
    quantize_frozen_linears(model.backbone)
    batch = toy_lm_batch(backbone)
    get_task("causal-lm").loss(model(**batch), batch["labels"]).backward()
    assert all(p.grad is not None for p in params)
