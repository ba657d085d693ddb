"""VeRA (Kopiczko et al. 2024): one frozen random pair A, B shared by every adapted layer; each layer trains
only two scaling vectors, W x + b ⊙ (B (d ⊙ (A x))).

A [r, max in] and B [max out, r] are drawn from `seed` exactly as peft draws them (Kaiming-uniform from a
CPU generator), each layer slicing the corner it needs; they are rebuilt on load and never stored, so the
adapter file holds the vectors d [r] and b [out] alone. b starts at zero, so an injected model is its base.
"""

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.methods.peft_mappings_scaling import VeRAPeftMapping
from slimtune.methods.lora import target_layers
from slimtune.models.folding import FoldableWrapper
from slimtune.models.surgery import replace_module


def kaiming_uniform(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """U(−√(6 / fan_in), √(6 / fan_in)) with fan_in = shape[1], drawn from `generator` (peft's `_kaiming_init`)."""
    bound = math.sqrt(3.0) * math.sqrt(2) / math.sqrt(shape[1])
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def shared_projections(seed: int, rank: int, largest_in: int, largest_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [r, in], B [out, r]), always the same for the same seed and sizes."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    a = kaiming_uniform((rank, largest_in), generator)
    return a, kaiming_uniform((largest_out, rank), generator)


class VeRALinear(FoldableWrapper):
    def __init__(self, base_layer: nn.Linear, shared_a: torch.Tensor, shared_b: torch.Tensor, d_initial: float,
                 dropout: float):
        super().__init__()
        self.base_layer = base_layer
        # non-persistent: rebuilt from the seed, never in a state dict; the same tensors in every layer
        self.register_buffer("vera_A", shared_a, persistent=False)  # [r, max in]
        self.register_buffer("vera_B", shared_b, persistent=False)  # [max out, r]
        self.vera_lambda_d = nn.Parameter(torch.full((shared_a.shape[0],), d_initial))  # [r]
        self.vera_lambda_b = nn.Parameter(torch.zeros(base_layer.out_features))  # [out]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vera_A[:, : self.base_layer.in_features], self.vera_B[: self.base_layer.out_features]

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._factors()
        return self.vera_lambda_b * ((self.vera_lambda_d * (x @ a.T)) @ b.T)

    def delta_weight(self) -> torch.Tensor:
        """diag(b) B diag(d) A [out, in]."""
        a, b = self._factors()
        return (self.vera_lambda_b[:, None] * b * self.vera_lambda_d) @ a

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.delta(self.dropout(x))

    def folded_parameters(self) -> dict[str, torch.Tensor]:
        return {"weight": self.base_layer.weight + self.delta_weight()}

    def row_update(self, x: torch.Tensor, base_out: torch.Tensor, base_layer: nn.Module) -> torch.Tensor:
        """The update over a shared base (see `Method.row_updates`)."""
        return base_out + self.delta(x)


@dataclass
class VeRAOptions:
    r: int = field(default=256, metadata={"help": "rank of the shared random matrices (VeRA affords a large one)"})
    d_initial: float = field(default=0.1, metadata={"help": "starting value of every d vector"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input"})
    seed: int = field(default=0, metadata={"help": "seed that rebuilds the shared A and B (not stored)"})
    targets: tuple[str, ...] = field(default=(), metadata={
        "help": "linear layer names or regexes (default: as LoRA's)"})

    def validate(self) -> None:
        if self.r < 1:
            raise SlimtuneError(f"VeRA rank r must be at least 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise SlimtuneError(f"VeRA dropout must be in [0, 1), got {self.dropout}")


class VeRA(Method):
    name = "vera"
    peft_mapping = VeRAPeftMapping
    summary = "a frozen random low-rank pair shared by all layers, scaled per layer by two trained vectors (mergeable)"
    Options = VeRAOptions
    mergeable = True
    # Reasoned, not yet swept: the VeRA paper trains its vectors at rates around 1e-2 (4e-3 to 1e-2 on GLUE).
    default_lr = 1e-2  # measured: docs/results.md, "Learning rates of the methods of issue 21"

    def inject(self, backbone: nn.Module) -> None:
        names = target_layers(backbone, self.options.targets)
        layers = [backbone.get_submodule(n) for n in names]
        o = self.options
        a, b = shared_projections(o.seed, o.r, max(l.in_features for l in layers), max(l.out_features for l in layers))
        for name, layer in zip(names, layers):
            replace_module(backbone, name, VeRALinear(layer, a, b, o.d_initial, o.dropout))

    def count_parameters(self, backbone: nn.Module) -> int:
        return sum(self.options.r + backbone.get_submodule(n).out_features for n in target_layers(backbone, self.options.targets))

    def _layers(self, backbone: nn.Module) -> dict[str, VeRALinear]:
        return {n: m for n, m in backbone.named_modules() if isinstance(m, VeRALinear)}

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [p for layer in self._layers(backbone).values() for p in (layer.vera_lambda_d, layer.vera_lambda_b)]

    def row_updates(self, backbone: nn.Module) -> dict:
        return {name: layer.row_update for name, layer in self._layers(backbone).items()}
