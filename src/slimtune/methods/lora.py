"""LoRA: a frozen linear layer plus a trainable low-rank update, W x + (α/r)·B A x.

B starts at zero, so an injected model reproduces its base exactly until it trains.
"""

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.models.folding import FoldableWrapper
from slimtune.models.surgery import find_linear_targets, replace_module, transformer_blocks


class LoRALinear(FoldableWrapper):
    """Wraps (never subclasses) a linear layer, so it stacks on quantized or pruned layers."""

    def __init__(self, base_layer: nn.Linear, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))  # [r, in]
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))  # [out, r]
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # [out, in]

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def folded_parameters(self) -> dict[str, torch.Tensor]:
        return {"weight": self.base_layer.weight + self.delta_weight()}

    def row_update(self, x: torch.Tensor, base_out: torch.Tensor, base_layer: nn.Module) -> torch.Tensor:
        """The update over a shared base (see `Method.row_updates`): base_out + (α/r)·x Aᵀ Bᵀ."""
        return base_out + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


def has_gated_mlp(backbone: nn.Module) -> bool:
    """Llama-style blocks: a gated feed-forward, two hidden→inner projections and one inner→hidden."""
    hidden, inner = backbone.config.hidden_size, getattr(backbone.config, "intermediate_size", None)
    try:
        block = transformer_blocks(backbone)[0]
    except SlimtuneError:
        return False
    shapes = [(m.in_features, m.out_features) for m in block.modules() if isinstance(m, nn.Linear)]
    return inner is not None and shapes.count((hidden, inner)) == 2 and shapes.count((inner, hidden)) == 1


def default_targets(backbone: nn.Module) -> tuple[str, ...]:
    """Every linear layer of llama-style blocks (attention and gated MLP projections, as in QLoRA); otherwise
    the attention query and value projections, by the naming convention the architecture uses."""
    if has_gated_mlp(backbone):
        block = transformer_blocks(backbone)[0]
        return tuple(dict.fromkeys(n.rsplit(".", 1)[-1] for n, m in block.named_modules() if isinstance(m, nn.Linear)))
    names = {n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)}
    for query, value in (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("c_attn", "c_attn")):
        if query in names and value in names:
            return tuple(dict.fromkeys((query, value)))
    raise SlimtuneError(f"cannot guess LoRA targets for this model; pass --set targets=... from: {sorted(names)}")


@dataclass
class LoRAOptions:
    r: int = field(default=8, metadata={"help": "rank of the update"})
    alpha: float = field(default=16.0, metadata={"help": "scale; the update is multiplied by alpha/r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    targets: tuple[str, ...] = field(
        default=(), metadata={"help": "linear layer names or regexes (default: attention query,value; in llama-style "
                                   "blocks every attention and MLP projection)"}
    )

    def validate(self) -> None:
        if self.r < 1:
            raise SlimtuneError(f"LoRA rank r must be at least 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise SlimtuneError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


class LoRA(Method):
    name = "lora"
    summary = "low-rank updates B·A added to chosen linear layers (mergeable)"
    Options = LoRAOptions
    default_lr = 2e-3  # measured: docs/results.md, "Choosing the defaults"
    mergeable = True

    def inject(self, backbone: nn.Module) -> None:
        targets = self.options.targets or default_targets(backbone)
        for name in find_linear_targets(backbone, targets):
            layer = backbone.get_submodule(name)
            replace_module(backbone, name, LoRALinear(layer, self.options.r, self.options.alpha, self.options.dropout))

    def count_parameters(self, backbone: nn.Module) -> int:
        targets = self.options.targets or default_targets(backbone)
        layers = [backbone.get_submodule(n) for n in find_linear_targets(backbone, targets)]
        return sum(self.options.r * (layer.in_features + layer.out_features) for layer in layers)

    def _layers(self, backbone: nn.Module) -> list[LoRALinear]:
        return [m for m in backbone.modules() if isinstance(m, LoRALinear)]

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [p for layer in self._layers(backbone) for p in (layer.lora_A, layer.lora_B)]

    def row_updates(self, backbone: nn.Module) -> dict:
        return {name: m.row_update for name, m in backbone.named_modules() if isinstance(m, LoRALinear)}
