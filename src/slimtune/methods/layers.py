"""Fine-tune a chosen range of transformer blocks whole; everything else stays frozen.

The blocks are found by structure: the `nn.ModuleList` of identical layers
(`encoder.layer` for BERT, `layers` for llama). Because nothing below the lowest
trained block requires a gradient, autograd records no graph there and backward
stops at that block by itself.

With `cache=true` the frozen blocks below the trained range run in eval mode
and their output for each example is kept, keyed by the example's token ids, so
later epochs skip them. Off by default: it also turns off dropout in those
blocks, which changes training.
"""

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from slimtune.data.batching import example_keys
from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.models.kv_cache import kv_cache
from slimtune.models.surgery import transformer_blocks

DEFAULT_TOP_LAYERS = 2
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


def parse_layer_spec(spec: str) -> list[int]:
    """'4-5' or '0,4-5' → sorted block indices; '' → [] (meaning the default)."""
    chosen = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = _RANGE.fullmatch(part)
        if not match:
            raise SlimtuneError(f"layers: {part!r} is not a block index or range like 4-5")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise SlimtuneError(f"layers: range {part!r} runs backwards")
        chosen.update(range(first, last + 1))
    return sorted(chosen)


def selected_blocks(spec: str, depth: int) -> list[int]:
    chosen = parse_layer_spec(spec) or list(range(max(0, depth - DEFAULT_TOP_LAYERS), depth))
    if chosen[-1] >= depth:
        raise SlimtuneError(f"layers: block {chosen[-1]} does not exist; this model has blocks 0-{depth - 1}")
    return chosen


def embedding_block(backbone: nn.Module, stack: nn.ModuleList) -> nn.Module | None:
    """The outermost module around the input embeddings that does not contain the blocks (BERT's `embeddings`)."""
    try:
        embeddings = backbone.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    names = {id(m): n for n, m in backbone.named_modules()}
    if id(embeddings) not in names:
        return None
    parts, stack_name = names[id(embeddings)].split("."), names[id(stack)]
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if stack_name != prefix and not stack_name.startswith(prefix + "."):
            return backbone.get_submodule(prefix)
    return None


class BlockOutputCache(nn.Module):
    """Outputs of the frozen blocks below the trained range, per example: [L, H] over its L real tokens.

    A forward pre-hook on the backbone (`before_forward`) reads the batch's token ids and attention mask, puts the
    embeddings and the lower blocks in eval mode (so a kept output equals a recomputed one), and marks the batch a
    hit when every example is kept. On a hit the lower blocks pass their input through and the last one returns the
    kept rows (zeros at padding, which attention and pooling ignore); otherwise they run and the last one keeps the
    new rows while the cache is under `capacity_bytes`. Keys ignore padding, so reshuffled batches still hit.
    """

    def __init__(self, stack: nn.ModuleList, below: int, embeddings: nn.Module | None, capacity_bytes: int):
        super().__init__()
        self._context = {"stack": stack, "embeddings": embeddings}  # a plain dict: these are not submodules
        self.below = below
        self.capacity_bytes = capacity_bytes
        self.rows: dict[bytes, torch.Tensor] = {}
        self.used_bytes = 0
        self.hits = 0  # examples served from the cache
        self.misses = 0  # examples computed
        self.tuple_output = False  # whether blocks return (hidden, ...) rather than hidden
        self.hit = False
        self.keys: list[bytes] | None = None  # the current batch's, None when this forward is not cached
        self.mask: torch.Tensor | None = None  # [B, T] bool, real tokens

    def _frozen_modules(self) -> list[nn.Module]:
        stack, embeddings = self._context["stack"], self._context["embeddings"]
        return [m for m in [embeddings, *(stack[i].base_layer for i in range(self.below))] if m is not None]

    def before_forward(self, backbone: nn.Module, args: tuple, kwargs: dict) -> None:
        self.end_batch()
        if not isinstance(self._context["stack"][self.below - 1], CachedBlock):
            return  # unwrapped for export: the cache is out of the model
        for module in self._frozen_modules():
            module.train(False)
        ids = kwargs.get("input_ids", args[0] if args else None)
        wants_internals = any(kwargs.get(k) or getattr(backbone.config, k, False)
                              for k in ("output_hidden_states", "output_attentions"))
        if ids is None or wants_internals or kwargs.get("inputs_embeds") is not None:
            return
        if kv_cache(kwargs) is not None:  # generating: skipped blocks would leave the cache unfilled
            return
        mask = kwargs.get("attention_mask")
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        self.keys = example_keys(ids, mask, kwargs.get("token_type_ids"))
        self.mask = mask
        known = sum(key in self.rows for key in self.keys)
        self.hit = known == len(self.keys)
        if self.hit:
            self.hits += len(self.keys)
        else:
            self.misses += len(self.keys)

    def end_batch(self) -> None:
        self.hit, self.keys, self.mask = False, None, None

    def serve(self, like: torch.Tensor) -> torch.Tensor:
        """[B, T, H] from the kept rows, shaped like the hidden states entering the block."""
        out = like.new_zeros(like.shape)
        out[self.mask] = torch.cat([self.rows[key] for key in self.keys])
        return out

    def keep(self, hidden: torch.Tensor) -> None:
        lengths = self.mask.sum(1).tolist()
        for key, row in zip(self.keys, hidden.detach()[self.mask].split(lengths)):
            size = row.numel() * row.element_size()
            if key not in self.rows and self.used_bytes + size <= self.capacity_bytes:
                self.rows[key] = row.clone()
                self.used_bytes += size


class CachedBlock(nn.Module):
    """A frozen block below the trained range, skipped when its batch is a cache hit."""

    def __init__(self, base_layer: nn.Module, cache: BlockOutputCache, is_last: bool):
        super().__init__()
        self.base_layer = base_layer
        self.cache = cache
        self.is_last = is_last

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        cache = self.cache
        if cache.hit:
            out = cache.serve(hidden_states) if self.is_last else hidden_states
            out = (out,) if cache.tuple_output else out
        else:
            out = self.base_layer(hidden_states, *args, **kwargs)
            cache.tuple_output = not isinstance(out, torch.Tensor)
            if self.is_last and cache.keys is not None:
                cache.keep(out[0] if cache.tuple_output else out)
        if self.is_last:
            cache.end_batch()  # nothing carries over to a call that bypasses the pre-hook
        return out


def block_cache(backbone: nn.Module) -> BlockOutputCache | None:
    return next((m for m in backbone.modules() if isinstance(m, BlockOutputCache)), None)


@dataclass
class LayersOptions:
    layers: str = field(default="", metadata={"help": "blocks to train, e.g. 4-5 or 0,4-5 (default: the top 2)"})
    cache: bool = field(default=False, metadata={
        "help": "keep the frozen lower blocks' outputs across epochs (runs them in eval mode: no dropout there)"})
    cache_mb: float = field(default=1024.0, metadata={"help": "memory bound of that cache in MiB; "
                                                              "examples past it are recomputed each time"})

    def validate(self) -> None:
        parse_layer_spec(self.layers)
        if self.cache_mb < 0:
            raise SlimtuneError(f"layers: cache_mb must not be negative, got {self.cache_mb}")


class LayerRange(Method):
    name = "layers"
    summary = "train whole transformer blocks (default: the top 2); optional cache of the frozen lower blocks"
    Options = LayersOptions
    mergeable = True  # trained in place; nothing to fold
    # Reasoned, not yet swept: whole blocks train like full fine-tuning (default 5e-5), but with the blocks
    # below frozen they tolerate a larger step, and one epoch of SST-2 is only 250 steps.
    default_lr = 1e-4

    def _plan(self, backbone: nn.Module) -> tuple[nn.ModuleList, list[int]]:
        stack = transformer_blocks(backbone)
        return stack, selected_blocks(self.options.layers, len(stack))

    def inject(self, backbone: nn.Module) -> None:
        stack, chosen = self._plan(backbone)
        below = chosen[0]
        if not self.options.cache or below == 0:
            return
        cache = BlockOutputCache(stack, below, embedding_block(backbone, stack), int(self.options.cache_mb * 2**20))
        for i in range(below):
            stack[i] = CachedBlock(stack[i], cache, is_last=i == below - 1)
        backbone.register_forward_pre_hook(cache.before_forward, with_kwargs=True)

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        stack, chosen = self._plan(backbone)
        return [p for i in chosen for p in stack[i].parameters()]

    def count_parameters(self, backbone: nn.Module) -> int:
        return sum(p.numel() for p in self.trainable_parameters(backbone))
