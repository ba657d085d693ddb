"""Structured pruning: choose the least important attention heads and FFN neurons and remove them.

The resizing itself and the recorded layout live in models/pruned_layout.py, which loading a pruned model needs too.
"""

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.models.pruned_layout import LAYOUT_KEY, encoder_parts, layout, remove_heads, remove_neurons


def check_count(sizes: list[int], count: int, scope: str, what: str) -> None:
    """Refuse a removal count that would empty a layer or, per layer, not split evenly."""
    layers, total = len(sizes), sum(sizes)
    if count < 0 or count > total - layers:
        raise SlimtuneError(f"can remove between 0 and {total - layers} {what} (one must remain per layer), got {count}")
    if scope == "layer" and count % layers:
        raise SlimtuneError(f"--scope layer removes the same number of {what} from each of the {layers} layers; "
                            f"{count} is not a multiple of {layers}")
    if scope == "layer" and count // layers >= min(sizes):
        raise SlimtuneError(f"--scope layer would remove {count // layers} {what} from a layer of {min(sizes)}")


def choose_lowest(scores: list[torch.Tensor], count: int, scope: str, what: str) -> list[list[int]]:
    """Per layer, the indices of the `count` least important units, never a layer's last one.

    `scores[l]` [units in layer l]; scope "global" ranks all units together,
    "layer" takes count / layers from each layer (so the layout stays uniform).
    """
    check_count([len(s) for s in scores], count, scope, what)
    if scope == "layer":
        return [sorted(torch.sort(s, stable=True).indices[: count // len(scores)].tolist()) for s in scores]
    ranked = sorted((float(score), layer, unit) for layer, s in enumerate(scores) for unit, score in enumerate(s))
    chosen, remaining, taken = [[] for _ in scores], [len(s) for s in scores], 0
    for _, layer, unit in ranked:
        if taken == count:
            break
        if remaining[layer] > 1:
            chosen[layer].append(unit)
            remaining[layer] -= 1
            taken += 1
    return [sorted(c) for c in chosen]


def prune_structure(backbone: nn.Module, heads: list[list[int]], neurons: list[list[int]]) -> None:
    """Remove the given heads and neurons per layer, and record the new layout in the config."""
    for parts, layer_heads, layer_neurons in zip(encoder_parts(backbone), heads, neurons):
        if layer_heads:
            remove_heads(parts, layer_heads)
        if layer_neurons:
            remove_neurons(parts, layer_neurons)
    setattr(backbone.config, LAYOUT_KEY, layout(backbone))


