"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): a small residual MLP after a sublayer's output.

Each wrapped output projection computes y = base(x), then y + up(act(down(y))),
[.., H] → [.., size] → [.., H]; the block's own dropout, residual and LayerNorm
follow unchanged. `up` starts at zero, so an injected model reproduces its base
exactly until it trains. Houlsby places an adapter after the attention output
projection and after the feed-forward output; Pfeiffer after the feed-forward only.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.models.surgery import replace_module

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
PLACEMENTS = ("houlsby", "pfeiffer")


class BottleneckAdapter(nn.Module):
    """Wraps (never subclasses) an output projection: y + up(act(down(y))) with y = base_layer(x)."""

    def __init__(self, base_layer: nn.Linear, size: int, activation: str):
        super().__init__()
        self.base_layer = base_layer
        width, like = base_layer.out_features, {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.down = nn.Linear(width, size, **like)  # [size, H]
        self.activation = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, width, **like)  # [H, size], zero: the adapter starts as the identity
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        return y + self.up(self.activation(self.down(y)))


def transformer_layers(backbone: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the module list with one entry per `config.num_hidden_layers`."""
    count = getattr(backbone.config, "num_hidden_layers", None)
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise SlimtuneError(f"adapters found no list of {count} transformer layers in {type(backbone).__name__}")


def output_projections(backbone: nn.Module, placement: str) -> list[str]:
    """Dotted names of the Linear layers that end each block's attention and feed-forward sublayers.

    Found by shape and the order modules are built in (which follows the data flow
    in transformers' models): the feed-forward output maps intermediate → hidden;
    the attention output is the hidden-wide Linear just before the feed-forward's
    first hidden → intermediate projection (BERT: attention.output.dense, output.dense;
    Llama: self_attn.o_proj, mlp.down_proj).
    """
    config = backbone.config
    hidden, inner = config.hidden_size, getattr(config, "intermediate_size", None)
    if inner is None:
        raise SlimtuneError(f"adapters need config.intermediate_size to find the feed-forward; "
                            f"{type(backbone).__name__} has none")
    stack = transformer_layers(backbone)
    prefix = next(n for n, m in backbone.named_modules() if m is stack)
    names = []
    for index, layer in enumerate(stack):
        linears = [(n, m) for n, m in layer.named_modules() if isinstance(m, nn.Linear)]
        expand = next((i for i, (_, m) in enumerate(linears) if (m.in_features, m.out_features) == (hidden, inner)), None)
        ffn_out = [n for n, m in linears if (m.in_features, m.out_features) == (inner, hidden)]
        if expand is None or expand == 0 or not ffn_out or linears[expand - 1][1].out_features != hidden:
            raise SlimtuneError(f"adapters cannot find the attention and feed-forward output projections in layer "
                                f"{index} of {type(backbone).__name__}; its linear layers are: "
                                + ", ".join(n for n, _ in linears))
        chosen = [linears[expand - 1][0], ffn_out[-1]] if placement == "houlsby" else [ffn_out[-1]]
        names += [f"{prefix}.{index}.{n}" for n in chosen]
    return names


@dataclass
class AdapterOptions:
    placement: str = field(default="houlsby", metadata={
        "help": "houlsby: after the attention and the feed-forward output; pfeiffer: after the feed-forward only"})
    size: int = field(default=64, metadata={"help": "bottleneck width"})
    activation: str = field(default="relu", metadata={"help": "nonlinearity in the bottleneck: relu or gelu"})

    def validate(self) -> None:
        if self.placement not in PLACEMENTS:
            raise SlimtuneError(f"adapter placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.size < 1:
            raise SlimtuneError(f"adapter size must be at least 1, got {self.size}")
        if self.activation not in ACTIVATIONS:
            raise SlimtuneError(f"adapter activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")


class Adapter(Method):
    name = "adapter"
    summary = "bottleneck adapters after attention and/or feed-forward outputs (Houlsby or Pfeiffer)"
    Options = AdapterOptions
    default_lr = 1e-3

    def inject(self, backbone: nn.Module) -> None:
        for name in output_projections(backbone, self.options.placement):
            layer = backbone.get_submodule(name)
            replace_module(backbone, name, BottleneckAdapter(layer, self.options.size, self.options.activation))

    def count_parameters(self, backbone: nn.Module) -> int:
        size = self.options.size
        widths = [backbone.get_submodule(n).out_features for n in output_projections(backbone, self.options.placement)]
        return sum(2 * size * width + size + width for width in widths)  # down W,b + up W,b

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        adapters = [m for m in backbone.modules() if isinstance(m, BottleneckAdapter)]
        return [p for a in adapters for p in (*a.down.parameters(), *a.up.parameters())]
