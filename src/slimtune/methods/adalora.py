"""AdaLoRA: LoRA in SVD form, W x + (α/r)·P diag(λ) Q x, whose rank budget is spent where it matters.

Each update is a sum of singular triplets (column of P, λ, row of Q). After every
optimizer step the trainer calls `on_step`, which scores the triplets by smoothed
sensitivity and zeroes the λ of the least important ones across all adapted
matrices until the total reaches the target (`rank_budget.py` has the schedule);
`extra_loss` keeps P and Q near orthogonal so that the triplets stay independent.
The saved adapter keeps only the surviving triplets, so each matrix has its own rank.
"""

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.adalora_view import rank_view
from slimtune.methods.base import InspectView, Method
from slimtune.methods.lora import target_layers
from slimtune.methods.peft_mappings import AdaLoRAPeftMapping
from slimtune.methods.rank_budget import BudgetSchedule, keep_most_important, update_sensitivity
from slimtune.models.folding import FoldableWrapper
from slimtune.models.surgery import replace_module

FACTORS = ("lora_P", "lora_lambda", "lora_Q")
SENSITIVITY = tuple(f"{factor}_{stat}" for factor in FACTORS for stat in ("sens_avg", "sens_unc"))
TRAINING_STATE = FACTORS + ("rank_mask",) + SENSITIVITY  # what a checkpoint needs to resume exactly


class SVDLoRALinear(FoldableWrapper):
    """Wraps (never subclasses) a linear layer; `rank_mask` [r] marks the triplets that survive the budget."""

    def __init__(self, base_layer: nn.Linear, rank: int, scaling: float, dropout: float):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = scaling  # α / initial r, kept when triplets are dropped so outputs do not change
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._allocate(rank)
        with torch.no_grad():  # λ starts at zero, so the wrapped layer first reproduces its base
            nn.init.normal_(self.lora_P, std=0.02)
            nn.init.normal_(self.lora_Q, std=0.02)

    def _allocate(self, rank: int) -> None:
        like = {"device": self.base_layer.weight.device, "dtype": self.base_layer.weight.dtype}
        self.lora_P = nn.Parameter(torch.zeros(self.base_layer.out_features, rank, **like))  # [out, r]
        self.lora_lambda = nn.Parameter(torch.zeros(rank, **like))  # [r]
        self.lora_Q = nn.Parameter(torch.zeros(rank, self.base_layer.in_features, **like))  # [r, in]
        self.register_buffer("rank_mask", torch.ones(rank, dtype=torch.bool, device=like["device"]))
        for factor in FACTORS:
            for stat in ("sens_avg", "sens_unc"):
                self.register_buffer(f"{factor}_{stat}", torch.zeros_like(getattr(self, factor)))

    @property
    def rank(self) -> int:
        return len(self.lora_lambda)

    def resize(self, rank: int) -> None:
        """Fresh factors of another rank (a saved adapter holds only the surviving triplets)."""
        trainable = self.lora_lambda.requires_grad
        self._allocate(rank)
        for factor in FACTORS:
            getattr(self, factor).requires_grad_(trainable)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_P * self.lora_lambda) @ self.lora_Q * self.scaling  # [out, in]

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + ((self.dropout(x) @ self.lora_Q.T) * self.lora_lambda) @ self.lora_P.T * self.scaling

    def folded_parameters(self) -> dict[str, torch.Tensor]:
        return {"weight": self.base_layer.weight + self.delta_weight()}

    def orthogonality_gap(self) -> torch.Tensor:
        """‖PᵀP − I‖_F + ‖QQᵀ − I‖_F: zero when the triplets are orthonormal."""
        eye = torch.eye(self.rank, device=self.lora_P.device, dtype=self.lora_P.dtype)
        return (torch.linalg.matrix_norm(self.lora_P.T @ self.lora_P - eye)
                + torch.linalg.matrix_norm(self.lora_Q @ self.lora_Q.T - eye))

    def update_importance(self, beta1: float, beta2: float) -> None:
        """A factor without a gradient (a layer the forward pass did not use) keeps its averages."""
        for factor in (f for f in FACTORS if getattr(self, f).grad is not None):
            update_sensitivity(getattr(self, factor), getattr(self, f"{factor}_sens_avg"),
                               getattr(self, f"{factor}_sens_unc"), beta1, beta2)

    def triplet_scores(self) -> torch.Tensor:
        """[r]: s(λ_i) + mean_j s(P_ji) + mean_j s(Q_ij), where s = smoothed sensitivity × uncertainty."""
        score = {f: getattr(self, f"{f}_sens_avg") * getattr(self, f"{f}_sens_unc") for f in FACTORS}
        return score["lora_lambda"] + score["lora_P"].mean(dim=0) + score["lora_Q"].mean(dim=1)

    @torch.no_grad()
    def set_mask(self, keep: torch.Tensor) -> None:
        self.rank_mask.copy_(keep)
        self.apply_mask()

    @torch.no_grad()
    def apply_mask(self) -> None:
        """Zero the singular values of dropped triplets, so they add nothing to the output."""
        self.lora_lambda.masked_fill_(~self.rank_mask, 0.0)


@dataclass
class AdaLoRAOptions:
    r: int = field(default=12, metadata={"help": "initial rank of every adapted matrix"})
    target_rank: int = field(default=8, metadata={"help": "average rank per matrix once the budget has fallen"})
    alpha: float = field(default=16.0, metadata={"help": "scale; the update is multiplied by alpha/r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input"})
    targets: tuple[str, ...] = field(
        default=(), metadata={"help": "linear layer names or regexes (default: attention query,value)"}
    )
    tinit: float = field(default=0.1, metadata={"help": "fraction of steps at the initial budget (warm-up)"})
    tfinal: float = field(default=0.3, metadata={"help": "fraction of steps at the target budget, mask fixed"})
    beta1: float = field(default=0.85, metadata={"help": "moving-average factor of the sensitivity"})
    beta2: float = field(default=0.85, metadata={"help": "moving-average factor of its uncertainty"})
    orth_reg: float = field(default=0.5, metadata={"help": "weight of the orthogonality regulariser on P and Q"})

    def validate(self) -> None:
        if self.r < 1:
            raise SlimtuneError(f"AdaLoRA initial rank r must be at least 1, got {self.r}")
        if not 0 <= self.target_rank <= self.r:
            raise SlimtuneError(f"AdaLoRA target_rank must be in [0, r={self.r}], got {self.target_rank}")
        if not 0 <= self.dropout < 1:
            raise SlimtuneError(f"AdaLoRA dropout must be in [0, 1), got {self.dropout}")
        if not (0 <= self.tinit and 0 <= self.tfinal and self.tinit + self.tfinal <= 1):
            raise SlimtuneError(f"AdaLoRA tinit and tfinal must be fractions summing to at most 1, "
                                f"got {self.tinit} and {self.tfinal}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise SlimtuneError(f"AdaLoRA {name} must be in [0, 1), got {getattr(self, name)}")
        if self.orth_reg < 0:
            raise SlimtuneError(f"AdaLoRA orth_reg must not be negative, got {self.orth_reg}")


class AdaLoRA(Method):
    name = "adalora"
    peft_mapping = AdaLoRAPeftMapping
    summary = "LoRA in SVD form whose rank budget moves to the most important matrices (mergeable)"
    Options = AdaLoRAOptions
    default_lr = 2e-3  # LoRA's measured rate; not swept for AdaLoRA
    mergeable = True

    def inject(self, backbone: nn.Module) -> None:
        o = self.options
        for name in target_layers(backbone, self.options.targets):
            layer = SVDLoRALinear(backbone.get_submodule(name), o.r, o.alpha / o.r, o.dropout)
            replace_module(backbone, name, layer)

    def count_parameters(self, backbone: nn.Module) -> int:
        layers = [backbone.get_submodule(n) for n in target_layers(backbone, self.options.targets)]
        return sum(self.options.r * (layer.in_features + layer.out_features + 1) for layer in layers)

    def _layers(self, backbone: nn.Module) -> list[tuple[str, SVDLoRALinear]]:
        return [(n, m) for n, m in backbone.named_modules() if isinstance(m, SVDLoRALinear)]

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [getattr(layer, f) for _, layer in self._layers(backbone) for f in FACTORS]

    def extra_loss(self, backbone: nn.Module) -> torch.Tensor | None:
        """orth_reg × the mean of ‖PᵀP − I‖_F and ‖QQᵀ − I‖_F over all adapted matrices."""
        if not self.options.orth_reg:
            return None
        gaps = torch.stack([layer.orthogonality_gap() for _, layer in self._layers(backbone)])
        return self.options.orth_reg * gaps.sum() / (2 * len(gaps))

    def on_step(self, backbone: nn.Module, step: int, total_steps: int) -> None:
        """Update the importance scores from this step's gradients, then mask to the scheduled budget."""
        o = self.options
        layers = [layer for _, layer in self._layers(backbone)]
        schedule = BudgetSchedule.over(total_steps, o.r * len(layers), o.target_rank * len(layers), o.tinit, o.tfinal)
        phase = schedule.phase(step)
        if phase == "final":
            for layer in layers:
                layer.apply_mask()
            return
        if all(layer.lora_lambda.grad is None for layer in layers):
            warnings.warn("adalora: on_step found no gradients (it must run before optimizer.zero_grad); "
                          "importance and rank budget were not updated", stacklevel=2)
            return
        for layer in layers:
            layer.update_importance(o.beta1, o.beta2)
        if phase != "warmup":
            keep = keep_most_important([layer.triplet_scores() for layer in layers], schedule.budget(step))
            for layer, mask in zip(layers, keep):
                layer.set_mask(mask)

    def state_dict(self, backbone: nn.Module) -> dict[str, torch.Tensor]:
        """Factors at the initial rank, the mask and the sensitivity averages: a resumed run continues exactly."""
        return {f"{name}.{part}": getattr(layer, part).detach().clone()
                for name, layer in self._layers(backbone) for part in TRAINING_STATE}

    def export_state_dict(self, backbone: nn.Module) -> dict[str, torch.Tensor]:
        """Only the surviving triplets: per matrix P [out, k], λ [k], Q [k, in], k its final rank."""
        state = {}
        for name, layer in self._layers(backbone):
            keep = layer.rank_mask
            state[f"{name}.lora_P"] = layer.lora_P.detach()[:, keep].clone()
            state[f"{name}.lora_lambda"] = layer.lora_lambda.detach()[keep].clone()
            state[f"{name}.lora_Q"] = layer.lora_Q.detach()[keep].clone()
        return state

    def low_rank_factors(self, state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(s·P diag(λ), Q) per layer from the saved triplets, s = α / initial r."""
        scaling = self.options.alpha / self.options.r
        paths = sorted(k.removesuffix(".lora_lambda") for k in state if k.endswith(".lora_lambda"))
        return {p: (state[f"{p}.lora_P"] * state[f"{p}.lora_lambda"] * scaling, state[f"{p}.lora_Q"]) for p in paths}

    def inspect(self, state: dict[str, torch.Tensor]) -> InspectView:
        """The final rank of every adapted matrix: a table, and a heatmap of layer × matrix."""
        return rank_view(state, self.options.r, self.options.target_rank)

    def load_state_dict(self, backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Either form: the training state (`state_dict`) or a saved adapter, rebuilt at each matrix's rank."""
        layers = dict(self._layers(backbone))
        parts = TRAINING_STATE if any(k.endswith(".rank_mask") for k in state) else FACTORS
        expected = {f"{name}.{part}" for name in layers for part in parts}
        if set(state) != expected:
            raise KeyError(f"adapter and model disagree on {sorted(set(state) ^ expected)[:5]}")
        with torch.no_grad():
            for name, layer in layers.items():
                rank = len(state[f"{name}.lora_lambda"])
                if rank != layer.rank:
                    layer.resize(rank)
                layer.rank_mask.fill_(True)
                for part in parts:
                    getattr(layer, part).copy_(state[f"{name}.{part}"])

