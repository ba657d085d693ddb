"""DoRA (Liu et al. 2024): the weight split into a trained magnitude and a direction that LoRA updates.

W' = m ⊙ (W + ΔW) / ‖W + ΔW‖, the norm taken per output row ([out]; the paper's column norm of Wᵀ) and
ΔW = s·B A as in LoRA (every LoRA option applies: rsLoRA, the initialisations). m [out] starts at ‖W‖, so an
injected model is its base until it trains. As in the paper (§4.3) and peft, the norm is treated as a constant
in the backward pass. At inference the factor m / ‖W + ΔW‖ is one vector per layer, so a DoRA adapter still
updates rows over a shared base: out = scale ⊙ (base_out − b + x ΔWᵀ) + b.
"""

import torch
from torch import nn

from slimtune.methods.lora import LoRA, LowRankLinear, target_layers
from slimtune.methods.peft_mappings import DoRAPeftMapping


class DoRALinear(LowRankLinear):
    """A low-rank direction update plus `magnitude` [out] over a wrapped linear layer."""

    def __init__(self, base_layer: nn.Linear, *args, **kwargs):
        super().__init__(base_layer, *args, **kwargs)
        with torch.no_grad():
            self.magnitude = nn.Parameter(self._direction_norm())  # [out]

    def _direction_norm(self) -> torch.Tensor:
        """‖W + ΔW‖ per output row [out], without gradient."""
        with torch.no_grad():
            return torch.linalg.norm(self.base_layer.weight + self.delta_weight(), dim=1)

    def _scale(self) -> torch.Tensor:
        return self.magnitude / self._direction_norm()  # [out]

    def _bias(self) -> torch.Tensor | float:
        return self.base_layer.bias if self.base_layer.bias is not None else 0.0

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._rescaled(x, self.base_layer(x), self.delta(x, self.dropout(x)), self._scale())

    def _rescaled(self, x, base_out, delta, scale) -> torch.Tensor:
        bias = self._bias()
        return scale * (base_out - bias + delta) + bias

    def folded_parameters(self) -> dict[str, torch.Tensor]:
        return {"weight": self._scale()[:, None] * (self.base_layer.weight + self.delta_weight())}

    def row_update(self, scale: torch.Tensor):
        """The update over a shared base at inference, its scale m / ‖W + ΔW‖ [out] computed once (see `DoRA`)."""
        def update(x: torch.Tensor, base_out: torch.Tensor, base_layer: nn.Module) -> torch.Tensor:
            return self._rescaled(x, base_out, self.delta(x), scale)
        return update


class DoRA(LoRA):
    name = "dora"
    peft_mapping = DoRAPeftMapping
    summary = "weight-decomposed LoRA: a trained magnitude per output times the LoRA-updated direction (mergeable)"
    default_lr = 2e-3  # measured: docs/results.md, "Learning rates of the methods of issue 21"
    needs_float_base_weights = True  # the direction's norm is taken over the fp32 weight matrix
    layer_type = DoRALinear

    def count_parameters(self, backbone: nn.Module) -> int:
        layers = [backbone.get_submodule(n) for n in target_layers(backbone, self.options.targets)]
        return sum(self.options.r * (layer.in_features + layer.out_features) + layer.out_features for layer in layers)

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [p for layer in self._layers(backbone) for p in (layer.lora_A, layer.lora_B, layer.magnitude)]

    def reads_base_weights(self) -> bool:
        return True  # the magnitude starts at ‖W‖ and the per-row scale divides by ‖W + ΔW‖

    def low_rank_factors(self, state: dict[str, torch.Tensor]) -> None:
        """None: the magnitude rescales the whole weight, so the update is not a low-rank sum."""
        return None

    def row_updates(self, backbone: nn.Module) -> dict:
        """Per layer, the update with its scale fixed now: call again after the adapter's weights change."""
        with torch.no_grad():
            return {name: m.row_update(m._scale()) for name, m in backbone.named_modules()
                    if isinstance(m, DoRALinear)}
