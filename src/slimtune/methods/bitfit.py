"""BitFit: train only the bias terms of the encoder (Ben Zaken et al., 2022).

Biases are found by structure, as the `bias` parameter of every Linear and
LayerNorm module. They are trained in place, so merging has nothing to fold.
The backbone's pooler is left out: it is either unused (and dropped) or trained
whole as part of the task head.
"""

from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method

BIASED_TYPES = (nn.Linear, nn.LayerNorm)


def encoder_biases(backbone: nn.Module) -> list[nn.Parameter]:
    """The bias of every Linear / LayerNorm in the backbone outside its pooler, in module order."""
    pooler = getattr(backbone, "pooler", None)
    skipped = {id(m) for m in pooler.modules()} if pooler is not None else set()
    return [m.bias for m in backbone.modules()
            if isinstance(m, BIASED_TYPES) and m.bias is not None and id(m) not in skipped]


class BitFit(Method):
    name = "bitfit"
    summary = "train only the bias terms of Linear and LayerNorm layers"
    mergeable = True  # biases are trained where they live; there is nothing to fold
    # Reasoned, not yet swept: biases are ~0.1% of MiniLM and move little per step, so they need a rate
    # near the head's (5e-3) rather than full fine-tuning's; the BitFit paper's best BERT rates were 1e-4..1e-3
    # over many epochs, and slimtune's reference run is one short epoch.
    default_lr = 2e-3

    def inject(self, backbone: nn.Module) -> None:
        if not encoder_biases(backbone):
            raise SlimtuneError(f"bitfit: {type(backbone).__name__} has no bias terms in its Linear or LayerNorm layers")

    def trainable_parameters(self, backbone: nn.Module) -> list[nn.Parameter]:
        return encoder_biases(backbone)

    def count_parameters(self, backbone: nn.Module) -> int:
        return sum(bias.numel() for bias in encoder_biases(backbone))
