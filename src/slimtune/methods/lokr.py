"""LoKr (LyCORIS; Edalati et al. 2022, KronA): the update is a Kronecker product, ΔW = s·(W1 ⊗ W2), s = α/r.

W [out, in] is split as out = a·b, in = c·d by peft's `factorization` (factors near the square root, or one
of them `decompose_factor`); W1 [a, c] is a full matrix and W2 [b, d] is low-rank, W2a [b, r] W2b [r, d],
when r < max(b, d)/2, full otherwise: peft's layout (without decompose_both), so its adapters map one to one.
W1 starts at zero (the others Kaiming-uniform): an injected model is its base. ΔW is dense and formed every
forward, so a LoKr adapter is served on its own copy rather than per row over a shared base.
"""

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.methods.peft_mappings_lycoris import LoKrPeftMapping
from slimtune.methods.lora import target_layers
from slimtune.models.folding import DenseDeltaWrapper
from slimtune.models.surgery import replace_module


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """dimension = m·n with m ≤ n: m = factor when it divides, else the divisor pair nearest the square root
    (no larger than `factor` when one is given); peft's and LyCORIS's rule, so shapes match theirs."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    factor = dimension if factor == -1 else factor
    m, n = 1, dimension
    while m < n:
        new_m = m + 1
        while dimension % new_m:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > m + n or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


def kronecker_shape(layer: nn.Linear, rank: int, factor: int) -> tuple[tuple[int, int], tuple[int, int], bool]:
    """(W1 shape [a, c], W2 shape [b, d], whether W2 is low-rank) for a layer [out = a·b, in = c·d]."""
    (a, b), (c, d) = factorization(layer.out_features, factor), factorization(layer.in_features, factor)
    return (a, c), (b, d), rank < max(b, d) / 2


class KroneckerLinear(DenseDeltaWrapper):
    def __init__(self, base_layer: nn.Linear, rank: int, alpha: float, factor: int):
        super().__init__()
        self.base_layer = base_layer
        (a, c), (b, d), low_rank = kronecker_shape(base_layer, rank, factor)
        self.lokr_w1 = nn.Parameter(torch.zeros(a, c))  # [a, c]
        if low_rank:
            self.lokr_w2_a = nn.Parameter(torch.empty(b, rank))  # [b, r]
            self.lokr_w2_b = nn.Parameter(torch.empty(rank, d))  # [r, d]
        else:
            self.lokr_w2 = nn.Parameter(torch.empty(b, d))  # [b, d]
        for factor_matrix in self.factors()[1:]:
            nn.init.kaiming_uniform_(factor_matrix, a=math.sqrt(5))
        self.scaling = alpha / rank

    def factors(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_parameters(recurse=False)]

    def delta_weight(self) -> torch.Tensor:
        w2 = self.lokr_w2 if hasattr(self, "lokr_w2") else self.lokr_w2_a @ self.lokr_w2_b
        return torch.kron(self.lokr_w1, w2) * self.scaling  # [out, in]


@dataclass
class LoKrOptions:
    r: int = field(default=8, metadata={"help": "rank of the second Kronecker factor when it is low-rank"})
    alpha: float = field(default=8.0, metadata={"help": "scale; the update is multiplied by alpha/r"})
    decompose_factor: int = field(default=-1, metadata={
        "help": "split each dimension as this times the rest (-1: the divisor pair nearest its square root)"})
    targets: tuple[str, ...] = field(default=(), metadata={"help": "linear layer names or regexes (default: as LoRA's)"})

    def validate(self) -> None:
        if self.r < 1:
            raise SlimtuneError(f"LoKr rank r must be at least 1, got {self.r}")
        if self.decompose_factor == 0 or self.decompose_factor < -1:
            raise SlimtuneError(f"LoKr decompose_factor must be positive or -1, got {self.decompose_factor}")


class LoKr(Method):
    name = "lokr"
    peft_mapping = LoKrPeftMapping
    summary = "Kronecker product of a small full and a low-rank factor on chosen linear layers (mergeable)"
    Options = LoKrOptions
    mergeable = True
    default_lr = 8e-3  # measured: docs/results.md, "Learning rates of the methods of issue 21"

    def inject(self, backbone: nn.Module) -> None:
        o = self.options
        for name in target_layers(backbone, self.options.targets):
            replace_module(backbone, name, KroneckerLinear(backbone.get_submodule(name), o.r, o.alpha,
                                                           o.decompose_factor))

    def count_parameters(self, backbone: nn.Module) -> int:
        total = 0
        for name in target_layers(backbone, self.options.targets):
            (a, c), (b, d), low_rank = kronecker_shape(backbone.get_submodule(name), self.options.r,
                                                       self.options.decompose_factor)
            total += a * c + (self.options.r * (b + d) if low_rank else b * d)
        return total

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [p for m in backbone.modules() if isinstance(m, KroneckerLinear) for p in m.factors()]
