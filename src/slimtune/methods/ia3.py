"""IA3 (Liu et al. 2022, "Few-shot parameter-efficient fine-tuning is better and cheaper than in-context
learning"): learned vectors that rescale the keys, the values and the feed-forward input, nothing else.

A key or value projection's output is multiplied channel by channel, l ⊙ (W x + b); the feed-forward's second
projection sees its input rescaled, W (l ⊙ x) + b. The vectors start at one, so an injected model is its base.
Merging rescales rows (diag(l)·W, l ⊙ b) or columns (W·diag(l)); as a per-row update over a shared base an
output scaling is one multiplication of the base output, an input scaling reruns the base layer on l ⊙ x.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.methods.peft_mappings_scaling import IA3PeftMapping
from slimtune.models.folding import FoldableWrapper
from slimtune.models.surgery import find_linear_targets, replace_module, transformer_blocks

KEY_VALUE_NAMES = (("key", "value"), ("k_proj", "v_proj"), ("k_lin", "v_lin"))


class ScaledLinear(FoldableWrapper):
    """A wrapped linear layer whose output (`on_input=False`) or input channels are scaled by `ia3_l`."""

    def __init__(self, base_layer: nn.Linear, on_input: bool):
        super().__init__()
        self.base_layer = base_layer
        self.on_input = on_input
        width = base_layer.in_features if on_input else base_layer.out_features
        self.ia3_l = nn.Parameter(torch.ones(width))  # [in] or [out]

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.row_update(x, None if self.on_input else self.base_layer(x), self.base_layer)

    def folded_parameters(self) -> dict[str, torch.Tensor]:
        weight, bias = self.base_layer.weight, self.base_layer.bias
        if self.on_input:
            return {"weight": weight * self.ia3_l}
        folded = {"weight": weight * self.ia3_l[:, None]}
        if bias is not None:
            folded["bias"] = bias * self.ia3_l
        return folded

    def row_update(self, x: torch.Tensor, base_out: torch.Tensor | None, base_layer: nn.Module) -> torch.Tensor:
        """The update over a shared base (see `Method.row_updates`)."""
        return base_layer(x * self.ia3_l) if self.on_input else base_out * self.ia3_l


def default_key_value_targets(backbone: nn.Module) -> tuple[str, ...]:
    names = {n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)}
    for pair in KEY_VALUE_NAMES:
        if set(pair) <= names:
            return pair
    raise SlimtuneError(f"ia3: cannot guess the key and value projections; pass --set targets=... from: "
                        f"{sorted(names)}")


def feedforward_inputs(backbone: nn.Module) -> list[str]:
    """The linear layers inside the blocks that take the feed-forward's inner width (BERT's output.dense,
    llama's down_proj): the feed-forward's second projection, whose input IA3 rescales."""
    inner = getattr(backbone.config, "intermediate_size", None)
    blocks = transformer_blocks(backbone)
    prefix = next(n for n, m in backbone.named_modules() if m is blocks) + "."
    return [n for n, m in backbone.named_modules()
            if n.startswith(prefix) and isinstance(m, nn.Linear) and m.in_features == inner]


@dataclass
class IA3Options:
    targets: tuple[str, ...] = field(default=(), metadata={
        "help": "layers whose output is rescaled (default: the attention keys and values)"})
    feedforward: tuple[str, ...] = field(default=(), metadata={
        "help": "layers whose input is rescaled (default: the feed-forward's second projection)"})


class IA3(Method):
    name = "ia3"
    peft_mapping = IA3PeftMapping
    summary = "learned vectors rescaling attention keys, values and the feed-forward input (mergeable)"
    Options = IA3Options
    mergeable = True
    # Reasoned, not yet swept: the IA3 paper trains its vectors at 3e-3; a vector near one moves little per step.
    default_lr = 3e-2  # measured: docs/results.md, "Learning rates of the methods of issue 21"

    def _targets(self, backbone: nn.Module) -> list[tuple[str, bool]]:
        """(layer name, scales its input) for every layer to wrap; a layer named in both counts as feed-forward."""
        inputs = (find_linear_targets(backbone, self.options.feedforward) if self.options.feedforward
                  else feedforward_inputs(backbone))
        outputs = find_linear_targets(backbone, self.options.targets or default_key_value_targets(backbone))
        return [(n, False) for n in outputs if n not in inputs] + [(n, True) for n in inputs]

    def inject(self, backbone: nn.Module) -> None:
        for name, on_input in self._targets(backbone):
            replace_module(backbone, name, ScaledLinear(backbone.get_submodule(name), on_input))

    def count_parameters(self, backbone: nn.Module) -> int:
        layers = [(backbone.get_submodule(n), on_input) for n, on_input in self._targets(backbone)]
        return sum(layer.in_features if on_input else layer.out_features for layer, on_input in layers)

    def _layers(self, backbone: nn.Module) -> dict[str, ScaledLinear]:
        return {n: m for n, m in backbone.named_modules() if isinstance(m, ScaledLinear)}

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [layer.ia3_l for layer in self._layers(backbone).values()]

    def row_updates(self, backbone: nn.Module) -> dict:
        return {name: layer.row_update for name, layer in self._layers(backbone).items()}
