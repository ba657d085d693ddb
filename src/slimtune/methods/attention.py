"""Train only the attention projections (query, key, value, output) of each block, optionally only some heads.

Found by structure: in each transformer block, the child module that holds a
module declaring its head geometry (BERT's `attention`, llama's `self_attn`);
its Linear layers are the projections, the last one defined being the output
projection. With all heads they train in place. With `heads=...` each
projection is wrapped with trainable deltas on the selected heads' slices only
(rows of query/key/value, columns of the output projection), so the other heads'
weights stay bit-identical, also after merging.
"""

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.models.folding import FoldableWrapper
from slimtune.models.surgery import transformer_blocks
from slimtune.models.surgery import replace_module

HEAD_ATTRIBUTES = ("num_attention_heads", "num_heads", "n_heads", "attention_head_size", "head_dim")
_HEAD_LIST = re.compile(r"\d+(,\d+)*")


def parse_heads(spec: str) -> dict[int | None, list[int]]:
    """'0,3,7' → {None: [0, 3, 7]} (every block); '0:1,2;3:0' → {0: [1, 2], 3: [0]}; '' → {} (all heads)."""
    spec = spec.replace(" ", "")
    if not spec:
        return {}
    if ":" not in spec:
        if not _HEAD_LIST.fullmatch(spec):
            raise SlimtuneError(f"heads: {spec!r} is not a list of head indices like 0,3,7")
        return {None: sorted(set(map(int, spec.split(","))))}
    chosen = {}
    for part in filter(None, spec.split(";")):
        block, _, heads = part.partition(":")
        if not block.isdigit() or not _HEAD_LIST.fullmatch(heads):
            raise SlimtuneError(f"heads: {part!r} is not BLOCK:HEADS like 3:0,1")
        chosen[int(block)] = sorted(set(map(int, heads.split(","))))
    return chosen


def _declares_heads(module: nn.Module) -> bool:
    return any(hasattr(module, a) for a in HEAD_ATTRIBUTES)


def attention_projections(block: nn.Module) -> list[tuple[nn.Module, bool]]:
    """(projection, is_output) for the Linear layers (or their wrappers) of each attention in a block."""
    found = []
    for child in block.children():
        if not any(_declares_heads(m) for m in child.modules()):
            continue
        linears = _linear_layers(child)
        found += [(m, i == len(linears) - 1) for i, m in enumerate(linears)]
    return found


def _linear_layers(module: nn.Module) -> list[nn.Module]:
    """Linear layers in definition order, a head-slice wrapper standing for the layer it wraps."""
    if isinstance(module, (nn.Linear, HeadSliceLinear)):
        return [module]
    return [layer for child in module.children() for layer in _linear_layers(child)]


def head_geometry(config) -> tuple[int, int]:
    """(number of heads, channels per head) from the model's config."""
    heads = config.num_attention_heads
    return heads, getattr(config, "head_dim", None) or config.hidden_size // heads


class HeadSliceLinear(FoldableWrapper):
    """A frozen projection plus trainable deltas on some heads' channels.

    `channels` [n·d] lists the selected heads' channels (heads 0,2 with d=8 → 0..7, 16..23). For query/key/value
    (axis 0) the delta is rows of W [out, in] and of the bias: delta_weight [n·d, in], delta_bias [n·d]. For the
    output projection (axis 1) it is columns: delta_weight [out, n·d]; its bias mixes all heads and stays frozen.
    """

    def __init__(self, base_layer: nn.Linear, channels: torch.Tensor, axis: int):
        super().__init__()
        self.base_layer = base_layer
        self.axis = axis
        self.register_buffer("channels", channels, persistent=False)
        n = len(channels)
        shape = (n, base_layer.in_features) if axis == 0 else (base_layer.out_features, n)
        self.delta_weight = nn.Parameter(torch.zeros(shape))
        with_bias = axis == 0 and base_layer.bias is not None
        self.delta_bias = nn.Parameter(torch.zeros(n)) if with_bias else None

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.axis == 0:
            return out.index_add(-1, self.channels, F.linear(x, self.delta_weight, self.delta_bias))
        return out + F.linear(x.index_select(-1, self.channels), self.delta_weight)

    def folded_parameters(self) -> dict[str, torch.Tensor]:
        folded = {"weight": self.base_layer.weight.index_add(self.axis, self.channels, self.delta_weight)}
        if self.delta_bias is not None:
            folded["bias"] = self.base_layer.bias.index_add(0, self.channels, self.delta_bias)
        return folded


@dataclass
class AttentionOptions:
    heads: str = field(default="", metadata={
        "help": "heads to train: 0,3,7 in every block, or per block 0:1,2;3:0 (unlisted blocks frozen); "
                "default: all heads"})

    def validate(self) -> None:
        parse_heads(self.heads)


class AttentionOnly(Method):
    name = "attention"
    summary = "train only the attention projections (query, key, value, output), optionally only chosen heads"
    Options = AttentionOptions
    mergeable = True
    # Reasoned, not yet swept: a third of each block's weights trained in place, between full fine-tuning
    # (5e-5) and LoRA (1e-3); zero-initialised head deltas behave the same under AdamW.
    default_lr = 1e-4

    def _heads_per_block(self, backbone: nn.Module) -> dict[int, list[int]]:
        """Block index → selected heads, checked against the model; {} means all heads everywhere."""
        spec = parse_heads(self.options.heads)
        if not spec:
            return {}
        depth, (n_heads, _) = len(transformer_blocks(backbone)), head_geometry(backbone.config)
        per_block = {b: spec[None] for b in range(depth)} if None in spec else spec
        for block, heads in per_block.items():
            if block >= depth:
                raise SlimtuneError(f"heads: block {block} does not exist; this model has blocks 0-{depth - 1}")
            if heads[-1] >= n_heads:
                raise SlimtuneError(f"heads: head {heads[-1]} does not exist; this model has heads 0-{n_heads - 1}")
        return per_block

    def _projections(self, backbone: nn.Module) -> list[tuple[int, nn.Module, bool]]:
        found = [(i, p, out) for i, block in enumerate(transformer_blocks(backbone))
                 for p, out in attention_projections(block)]
        if not found:
            raise SlimtuneError(f"attention: no attention projections found in {type(backbone).__name__}")
        return found

    def inject(self, backbone: nn.Module) -> None:
        per_block = self._heads_per_block(backbone)
        if not per_block:
            return
        n_heads, head_dim = head_geometry(backbone.config)
        names = {id(m): n for n, m in backbone.named_modules()}
        for block, layer, is_output in self._projections(backbone):
            if block not in per_block:
                continue
            width = layer.in_features if is_output else layer.out_features
            if width != n_heads * head_dim:
                raise SlimtuneError(f"heads: {names[id(layer)]} has {width} channels, not heads × head_dim = "
                                    f"{n_heads * head_dim}; head selection needs separate per-head projections")
            channels = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in per_block[block]])
            replace_module(backbone, names[id(layer)], HeadSliceLinear(layer, channels, axis=1 if is_output else 0))

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        if self.options.heads.strip():  # only the selected heads' deltas; blocks left unlisted stay frozen
            pairs = [(layer.delta_weight, layer.delta_bias) for layer in self._wrappers(backbone)]
        else:
            pairs = [(layer.weight, layer.bias) for _, layer, _ in self._projections(backbone)]
        return [p for pair in pairs for p in pair if p is not None]

    def count_parameters(self, backbone: nn.Module) -> int:
        per_block = self._heads_per_block(backbone)
        _, head_dim = head_geometry(backbone.config)
        total = 0
        for block, layer, is_output in self._projections(backbone):
            layer = layer.base_layer if isinstance(layer, HeadSliceLinear) else layer
            has_bias = layer.bias is not None
            if not per_block:
                total += layer.weight.numel() + (layer.bias.numel() if has_bias else 0)
            elif block in per_block:
                channels = len(per_block[block]) * head_dim
                total += channels * (layer.out_features if is_output else layer.in_features + has_bias)
        return total

    def _wrappers(self, backbone: nn.Module) -> list[HeadSliceLinear]:
        return [m for m in backbone.modules() if isinstance(m, HeadSliceLinear)]
