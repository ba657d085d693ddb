"""Unstructured magnitude pruning: zero the smallest |w| of the transformer blocks' linear weights.

The zeros are stored densely, so the model file keeps its size; what shrinks is the
count of non-zero weights (a sparse format or kernel is needed to turn that into bytes or speed).
"""

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.models.surgery import transformer_blocks

SCOPES = ("global", "layer")


def prunable_linears(backbone: nn.Module) -> dict[str, nn.Linear]:
    """Linear layers inside the transformer blocks, by name; embeddings and the pooler are left alone."""
    blocks = transformer_blocks(backbone)
    prefix = next(n for n, m in backbone.named_modules() if m is blocks)
    return {f"{prefix}.{n}": m for n, m in blocks.named_modules() if isinstance(m, nn.Linear)}


def _smallest(magnitudes: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` smallest entries of a flat tensor; ties go to the lower index, so the count is exact."""
    return torch.sort(magnitudes, stable=True).indices[:count]


@torch.no_grad()
def magnitude_prune(backbone: nn.Module, sparsity: float, scope: str = "global") -> dict:
    """Zero round(sparsity · n) weights, n counted over all layers (global) or per layer; returns counts."""
    if not 0 <= sparsity < 1:
        raise SlimtuneError(f"--sparsity must be in [0, 1), got {sparsity}")
    if scope not in SCOPES:
        raise SlimtuneError(f"unknown scope {scope!r}; choose from {list(SCOPES)}")
    layers = list(prunable_linears(backbone).values())
    if scope == "global":
        flat = torch.cat([layer.weight.abs().flatten() for layer in layers])
        mask = torch.ones_like(flat, dtype=torch.bool)
        mask[_smallest(flat, round(sparsity * flat.numel()))] = False
        for layer, keep in zip(layers, mask.split([layer.weight.numel() for layer in layers])):
            layer.weight.mul_(keep.view_as(layer.weight))
    else:
        for layer in layers:
            flat = layer.weight.view(-1)
            flat[_smallest(flat.abs(), round(sparsity * flat.numel()))] = 0.0
    total = sum(layer.weight.numel() for layer in layers)
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    return {"pruned_weights": zeros, "prunable_weights": total, "sparsity": zeros / total, "scope": scope}
