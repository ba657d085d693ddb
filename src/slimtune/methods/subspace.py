"""Intrinsic-dimension fine-tuning: the chosen weights move only inside a d-dimensional subspace, θ = θ₀ + P α.

Li et al. 2018 ("Measuring the intrinsic dimension of objective landscapes") and
Aghajanyan et al. 2021 ("Intrinsic dimensionality explains the effectiveness of
language model fine-tuning"). Only α [d] trains, shared by every wrapped matrix;
P is structured (see `projections.py`) and rebuilt from the seed, or from the base
weights for `svd`, so the adapter file holds α alone and the options hold the seed.
P's columns have unit norm, so ||ΔW|| ≈ scale·||α|| whichever projection is used;
`scale` lets α and the task head share one learning rate (see `default_lr`).
α starts at zero: an injected model is its base until it trains. Every forward
computes each matrix's ΔW = reshape(P_m · scale·α) once and uses W₀ + ΔW.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.methods.projections import FastfoodProjection, SingularProjection, SparseProjection
from slimtune.models.folding import FoldableWrapper
from slimtune.models.surgery import find_linear_targets, replace_module, transformer_blocks

PROJECTIONS = ("fastfood", "sparse", "svd")


class SubspaceLinear(FoldableWrapper):
    """A frozen linear layer whose weight is W₀ + reshape(P_m · scale·α); α is shared with the other wrapped layers."""

    def __init__(self, base_layer: nn.Linear, alpha: nn.Parameter, projection: nn.Module, scale: float):
        super().__init__()
        self.base_layer = base_layer
        self.alpha = alpha  # [d], the same Parameter in every SubspaceLinear of the model
        self.projection = projection
        self.scale = scale

    def delta_weight(self) -> torch.Tensor:
        weight = self.base_layer.weight
        return self.projection(self.alpha * self.scale).view_as(weight).to(weight.dtype)  # [out, in]

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.base_layer.weight + self.delta_weight(), self.base_layer.bias)

    def folded_parameters(self) -> dict[str, torch.Tensor]:
        return {"weight": self.base_layer.weight + self.delta_weight()}


def subspace_targets(backbone: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Names of the Linear layers inside the transformer blocks that `patterns` match (default: all of them)."""
    blocks = transformer_blocks(backbone)
    prefix = next(n for n, m in backbone.named_modules() if m is blocks) + "."
    names = [n for n in find_linear_targets(backbone, patterns or (".*",)) if n.startswith(prefix)]
    if not names:
        raise SlimtuneError(f"subspace: targets {list(patterns)} match no linear layer inside the transformer blocks")
    return names


def singular_ranks(layers: list[nn.Linear], dim: int) -> list[int]:
    """How many of α's d values each matrix gets for projection=svd: d split as evenly as the ranks allow."""
    count = len(layers)
    ranks = [dim // count + (i < dim % count) for i in range(count)]
    capacity = min(min(layer.weight.shape) for layer in layers)
    if dim < count or ranks[0] > capacity:
        raise SlimtuneError(f"subspace: projection=svd splits dim over {count} matrices of rank up to {capacity}, "
                            f"so dim must be between {count} and {count * capacity}; got {dim}")
    return ranks


@dataclass
class SubspaceOptions:
    dim: int = field(default=1000, metadata={"help": "d, the size of α: the only trained backbone parameters"})
    projection: str = field(default="fastfood", metadata={
        "help": "P: fastfood (Hadamard-based random), sparse (very sparse random) or svd (each matrix's top "
                "singular vectors, d split across the matrices)"})
    scale: float = field(default=20.0, metadata={
        "help": "α is multiplied by this before projecting (P has unit-norm columns); under Adam that makes it "
                "α's learning rate relative to the task head's"})
    seed: int = field(default=0, metadata={"help": "seed that rebuilds the random projection (not stored)"})
    targets: tuple[str, ...] = field(
        default=(), metadata={"help": "linear layer names or regexes inside the blocks (default: all of them)"})

    def validate(self) -> None:
        if self.dim < 1:
            raise SlimtuneError(f"subspace: dim must be at least 1, got {self.dim}")
        if self.scale <= 0:
            raise SlimtuneError(f"subspace: scale must be positive, got {self.scale}")
        if self.projection not in PROJECTIONS:
            raise SlimtuneError(f"subspace: projection must be one of {', '.join(PROJECTIONS)}, "
                                f"got {self.projection!r}")


class Subspace(Method):
    name = "subspace"
    summary = "intrinsic-dimension fine-tuning: W₀ + P·α with only α (d values) trained, P rebuilt from a seed"
    Options = SubspaceOptions
    mergeable = True
    needs_float_base_weights = True  # W₀ + P·α is formed from the fp32 weight matrix
    # α and the head share one learning rate. Measured on 30-step SST-2 runs with α on its own rate and the head at
    # its best 1e-2: α does best near 0.3 (0.1 and 1 worse, 3 diverges) with unit-norm columns, for all three
    # projections alike, so scale=20 puts α near 0.2 while the head keeps its 1e-2.
    default_lr = 1e-2

    def inject(self, backbone: nn.Module) -> None:
        if self._layers(backbone):
            raise SlimtuneError("subspace: this backbone already carries a subspace")
        names = subspace_targets(backbone, self.options.targets)
        layers = [backbone.get_submodule(n) for n in names]
        device = layers[0].weight.device
        alpha = nn.Parameter(torch.zeros(self.options.dim, device=device))
        for name, layer, projection in zip(names, layers, self._projections(layers)):
            replace_module(backbone, name, SubspaceLinear(layer, alpha, projection.to(device), self.options.scale))

    def _projections(self, layers: list[nn.Linear]) -> list[nn.Module]:
        dim, kind = self.options.dim, self.options.projection
        if kind == "svd":
            ranks = singular_ranks(layers, dim)
            offsets = [sum(ranks[:i]) for i in range(len(ranks))]
            return [SingularProjection(layer.weight, o, r) for layer, o, r in zip(layers, offsets, ranks)]
        generator = torch.Generator().manual_seed(self.options.seed)
        total = sum(layer.weight.numel() for layer in layers)
        build = FastfoodProjection if kind == "fastfood" else SparseProjection
        return [build(layer.weight.numel(), dim, total, generator) for layer in layers]

    def reads_base_weights(self) -> bool:
        return self.options.projection == "svd"  # the basis comes from W₀'s singular vectors

    def _layers(self, backbone: nn.Module) -> list[SubspaceLinear]:
        return [m for m in backbone.modules() if isinstance(m, SubspaceLinear)]

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return list({id(layer.alpha): layer.alpha for layer in self._layers(backbone)}.values())

    def count_parameters(self, backbone: nn.Module) -> int:
        return self.options.dim

    def state_dict(self, backbone: nn.Module) -> dict[str, torch.Tensor]:
        """α alone [d]: the projection comes back from the seed (or the base weights) in the options."""
        (alpha,) = self.trainable_parameters(backbone)
        return {"alpha": alpha.detach().clone()}

    def load_state_dict(self, backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
        (alpha,) = self.trainable_parameters(backbone)
        if set(state) != {"alpha"}:
            raise KeyError(f"a subspace adapter holds only 'alpha', this one holds {sorted(state)[:5]}")
        if state["alpha"].shape != alpha.shape:
            raise KeyError(f"adapter alpha has {tuple(state['alpha'].shape)} values, the options say dim={alpha.numel()}")
        with torch.no_grad():
            alpha.copy_(state["alpha"])
