"""The layout of a structurally pruned encoder: resizing blocks to a recorded head and neuron count, and loading it.

Head h of a block owns rows h·d:(h+1)·d of the query, key and value projections
(d = head_dim) and the same columns of the attention output projection; FFN
neuron j owns row j of the intermediate projection and column j of the FFN output
projection. Removing them gives a smaller model that computes exactly what the
full model computes with those heads and neurons masked to zero.

transformers 5 dropped `prune_heads` and BERT's config cannot describe per-layer
head counts or FFN widths, so a pruned model records them as `slimtune_pruning`
in config.json and `load_pruned` rebuilds the shapes before loading the weights.
Plain `AutoModel.from_pretrained` refuses such a directory with a size-mismatch error.
Choosing what to remove is compression/structured.py's job.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.models.surgery import replace_module, transformer_blocks

LAYOUT_KEY = "slimtune_pruning"
PART_NAMES = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attention_out": "attention.output.dense", "intermediate": "intermediate.dense", "ffn_out": "output.dense",
}


@dataclass
class BlockParts:
    """One transformer block and the linear layers that head and neuron pruning resize."""

    block: nn.Module
    self_attention: nn.Module

    def layer(self, part: str) -> nn.Linear:
        return self.block.get_submodule(PART_NAMES[part])

    @property
    def head_dim(self) -> int:
        return self.self_attention.attention_head_size

    @property
    def num_heads(self) -> int:
        return self.layer("query").out_features // self.head_dim

    @property
    def num_neurons(self) -> int:
        return self.layer("intermediate").out_features


def encoder_parts(backbone: nn.Module) -> list[BlockParts]:
    """The blocks of a BERT-style encoder; a clear error for other layouts."""
    parts = []
    for block in transformer_blocks(backbone):
        try:
            layers = [block.get_submodule(name) for name in PART_NAMES.values()]
            self_attention = block.get_submodule("attention.self")
        except AttributeError:
            layers, self_attention = [], None
        if not all(isinstance(m, nn.Linear) for m in layers) or not layers or \
                not hasattr(self_attention, "attention_head_size"):
            raise SlimtuneError(f"structured pruning needs a BERT-style encoder (linear layers "
                                f"{', '.join(PART_NAMES.values())}); {type(block).__name__} does not have them")
        parts.append(BlockParts(block, self_attention))
    return parts


def _sliced(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new linear layer with only the kept output rows (dim 0) or input columns (dim 1)."""
    weight = linear.weight.detach().index_select(dim, keep)  # [out', in] or [out, in']
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias if dim == 1 else linear.bias.index_select(0, keep))
    new.requires_grad_(linear.weight.requires_grad)
    return new


def _kept(total: int, removed, what: str) -> torch.Tensor:
    removed = set(int(i) for i in removed)
    if not removed <= set(range(total)):
        raise SlimtuneError(f"{what} {sorted(removed - set(range(total)))} out of range 0..{total - 1}")
    keep = [i for i in range(total) if i not in removed]
    if not keep:
        raise SlimtuneError(f"cannot remove all {total} {what} of a layer; at least one must remain")
    return torch.tensor(keep)


def remove_heads(parts: BlockParts, heads) -> None:
    """Drop attention heads (indices into the block's current heads) from q, k, v and the output projection."""
    d = parts.head_dim
    keep_heads = _kept(parts.num_heads, heads, "heads")
    keep = (keep_heads[:, None] * d + torch.arange(d)).flatten()  # [kept·d] rows of q, k, v
    for part in ("query", "key", "value"):
        replace_module(parts.block, PART_NAMES[part], _sliced(parts.layer(part), keep, 0))
    replace_module(parts.block, PART_NAMES["attention_out"], _sliced(parts.layer("attention_out"), keep, 1))
    parts.self_attention.num_attention_heads = len(keep_heads)
    parts.self_attention.all_head_size = len(keep_heads) * d


def remove_neurons(parts: BlockParts, neurons) -> None:
    """Drop FFN neurons: rows of the intermediate projection, columns of the FFN output projection."""
    keep = _kept(parts.num_neurons, neurons, "neurons")
    replace_module(parts.block, PART_NAMES["intermediate"], _sliced(parts.layer("intermediate"), keep, 0))
    replace_module(parts.block, PART_NAMES["ffn_out"], _sliced(parts.layer("ffn_out"), keep, 1))


def layout(backbone: nn.Module) -> dict:
    """{"attention_heads": [per layer], "intermediate_sizes": [per layer]}: what the config cannot say."""
    parts = encoder_parts(backbone)
    return {"attention_heads": [p.num_heads for p in parts], "intermediate_sizes": [p.num_neurons for p in parts]}


def load_pruned(path: str, config) -> nn.Module:
    """Rebuild a structurally pruned model: build from config, shrink to the recorded layout, load weights."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    recorded = getattr(config, LAYOUT_KEY)
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise SlimtuneError(f"{path}: a pruned model needs its weights in model.safetensors")
    model = AutoModel.from_config(config, dtype=torch.float32)
    parts = encoder_parts(model)
    if len(parts) != len(recorded["attention_heads"]):
        raise SlimtuneError(f"{path}: {LAYOUT_KEY} describes {len(recorded['attention_heads'])} layers, "
                            f"the model has {len(parts)}")
    for p, n_heads, n_neurons in zip(parts, recorded["attention_heads"], recorded["intermediate_sizes"]):
        remove_heads(p, range(n_heads, p.num_heads))
        remove_neurons(p, range(n_neurons, p.num_neurons))
    try:
        missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    except RuntimeError as e:
        raise SlimtuneError(f"{weights} does not match its recorded layout: {str(e).splitlines()[0]}") from None
    missing = [k for k in missing if not k.startswith("pooler.")]  # merged task models drop an unused pooler
    if missing or unexpected:
        raise SlimtuneError(f"{weights} does not match its model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()
