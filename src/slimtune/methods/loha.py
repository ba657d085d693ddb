"""LoHa (Hyeon-Woo et al. 2022, FedPara; LyCORIS): the update is the Hadamard product of two low-rank matrices,
ΔW = s·(W1a W1b) ⊙ (W2a W2b), s = α/r: rank up to r² from 2r(in + out) values.

Initialised as peft does (W2b zero, the others Kaiming-uniform), so an injected model is its base. ΔW is dense
and formed every forward, so a LoHa adapter is served on its own copy rather than per row over a shared base.
"""

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.methods.peft_mappings_lycoris import LoHaPeftMapping
from slimtune.methods.lora import target_layers
from slimtune.models.folding import DenseDeltaWrapper
from slimtune.models.surgery import replace_module

FACTORS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")


class HadamardLinear(DenseDeltaWrapper):
    def __init__(self, base_layer: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base_layer = base_layer
        out, inp = base_layer.out_features, base_layer.in_features
        self.hada_w1_a = nn.Parameter(torch.empty(out, rank))  # [out, r]
        self.hada_w1_b = nn.Parameter(torch.empty(rank, inp))  # [r, in]
        self.hada_w2_a = nn.Parameter(torch.empty(out, rank))  # [out, r]
        self.hada_w2_b = nn.Parameter(torch.zeros(rank, inp))  # [r, in]
        for factor in (self.hada_w1_a, self.hada_w1_b, self.hada_w2_a):
            nn.init.kaiming_uniform_(factor, a=math.sqrt(5))
        self.scaling = alpha / rank

    def delta_weight(self) -> torch.Tensor:
        return (self.hada_w1_a @ self.hada_w1_b) * (self.hada_w2_a @ self.hada_w2_b) * self.scaling  # [out, in]


@dataclass
class LoHaOptions:
    r: int = field(default=8, metadata={"help": "rank of each of the two factors"})
    alpha: float = field(default=8.0, metadata={"help": "scale; the update is multiplied by alpha/r"})
    targets: tuple[str, ...] = field(default=(), metadata={"help": "linear layer names or regexes (default: as LoRA's)"})

    def validate(self) -> None:
        if self.r < 1:
            raise SlimtuneError(f"LoHa rank r must be at least 1, got {self.r}")


class LoHa(Method):
    name = "loha"
    peft_mapping = LoHaPeftMapping
    summary = "Hadamard product of two low-rank updates on chosen linear layers (mergeable)"
    Options = LoHaOptions
    mergeable = True
    default_lr = 4e-3  # measured: docs/results.md, "Learning rates of the methods of issue 21"

    def inject(self, backbone: nn.Module) -> None:
        for name in target_layers(backbone, self.options.targets):
            layer = backbone.get_submodule(name)
            replace_module(backbone, name, HadamardLinear(layer, self.options.r, self.options.alpha))

    def count_parameters(self, backbone: nn.Module) -> int:
        layers = [backbone.get_submodule(n) for n in target_layers(backbone, self.options.targets)]
        return sum(2 * self.options.r * (layer.in_features + layer.out_features) for layer in layers)

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [getattr(m, f) for m in backbone.modules() if isinstance(m, HadamardLinear) for f in FACTORS]
