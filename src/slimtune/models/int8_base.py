"""A frozen base kept in int8 while adapters train in fp32 on top: the QLoRA idea, on a CPU.

`Int8Linear` replaces a frozen `nn.Linear`: its weight is stored as int8 with one
fp32 scale per output channel (symmetric, weight-only: activations stay fp32),
a quarter of the fp32 bytes. Each forward dequantises the weight on the fly; the
autograd function keeps only the int8 weight for backward and dequantises again
there, so training never holds fp32 copies of the frozen weights between the two
passes. Gradients flow to the input (and so to LoRA factors and anything below)
but never to the int8 weight, which has none.

Generation calls every projection once per new token on a batch of a few rows, where dequantising the whole
weight costs more than the matmul; `dequantized_weights` keeps one fp32 copy of each weight for the duration of
a `generate` call instead (torch's weight-only int8 kernel, `_weight_int8pack_mm`, measured 6x slower than
dequantising on this CPU in fp32).

`quantize_frozen_linears` swaps every frozen Linear of a module, including the
`base_layer` inside method wrappers such as LoRA's, after the method is injected,
so wrappers keep wrapping and trained layers stay fp32.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.models.surgery import replace_module

BASE_INT8_CHOICES = ("int8",)  # weight-only int8 frozen base for training (`--base-int8`)


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float → ([out, in] int8, [out] fp32 scale) with weight ≈ int8 · scale[:, None]."""
    scale = weight.detach().abs().amax(dim=1).float().clamp(min=1e-12) / 127.0
    quantized = torch.round(weight.detach().float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return quantized, scale


class _Int8MatMul(torch.autograd.Function):
    """x [.., in] @ (q [out, in] · s [out]).T → [.., out]; saves q and s, not the dequantised weight."""

    @staticmethod
    def forward(ctx, x, quantized, scale):
        ctx.save_for_backward(quantized, scale)
        return x @ (quantized.to(x.dtype) * scale.to(x.dtype)[:, None]).T

    @staticmethod
    def backward(ctx, grad_out):
        quantized, scale = ctx.saved_tensors
        weight = quantized.to(grad_out.dtype) * scale.to(grad_out.dtype)[:, None]
        return grad_out @ weight, None, None


class Int8Linear(nn.Module):
    """A frozen linear layer with int8 weights [out, in], per-output-channel fp32 scales and an fp32 bias."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        quantized, scale = quantize_per_channel(linear.weight)
        self.register_buffer("weight_int8", quantized)
        self.register_buffer("weight_scale", scale)
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self.cached_weight: torch.Tensor | None = None  # fp32 [out, in], only inside `dequantized_weights`

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_int8.float() * self.weight_scale[:, None]  # [out, in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cached_weight is not None:
            return F.linear(x, self.cached_weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        out = _Int8MatMul.apply(x, self.weight_int8, self.weight_scale)
        return out + self.bias.to(out.dtype) if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


@contextlib.contextmanager
def dequantized_weights(root: nn.Module):
    """Inside the block every Int8Linear of `root` computes with an fp32 copy of its weight, made once on entry
    and dropped on exit: for generation, which would otherwise dequantise each weight again for every token.
    It holds the fp32 bytes of the int8 layers meanwhile (4x their int8 size); modules without int8 layers are
    unaffected."""
    layers = [m for m in root.modules() if isinstance(m, Int8Linear) and m.cached_weight is None]
    with torch.no_grad():
        for layer in layers:
            layer.cached_weight = layer.dequantized_weight()
    try:
        yield
    finally:
        for layer in layers:
            layer.cached_weight = None


def quantize_frozen_linears(root: nn.Module) -> int:
    """Replace every nn.Linear of `root` whose parameters are all frozen by an Int8Linear; returns how many.

    Linears that share their weight and bias tensors (the tasks' weight-sharing encoder
    copies of a per-task multi-task model) share one Int8Linear, so the int8 base is
    held once. The remaining tensors are then copied into memory the process owns:
    transformers memory-maps safetensors checkpoints, and while any tensor still views
    the file mapping, the fp32 pages of the replaced layers stay resident too.
    """
    names = [n for n, m in root.named_modules()
             if type(m) is nn.Linear and n and not any(p.requires_grad for p in m.parameters())]
    made: dict[tuple[int, int], Int8Linear] = {}  # keyed by ids of tensors all alive when the loop starts
    for name in names:
        linear = root.get_submodule(name)
        key = (id(linear.weight), id(linear.bias))
        if key not in made:
            made[key] = Int8Linear(linear)
        replace_module(root, name, made[key])
    with torch.no_grad():
        for tensor in {id(t): t for t in [*root.parameters(), *root.buffers()]}.values():
            tensor.data = tensor.data.clone()
    return len(names)


def weight_bytes(root: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers, each tensor counted once (tied weights too)."""
    tensors = {id(t): t for t in [*root.parameters(), *root.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())
