"""Dynamic int8 inference: linear weights stored as int8, activations quantized on the fly per batch (CPU).

Uses PyTorch's own eager-mode tooling, `torch.ao.quantization.quantize_dynamic`.
torch 2.13 still ships it but warns that it is deprecated in favour of torchao
(not a dependency here); the warning is silenced only around the call.

A quantized model has no safetensors form, so an int8 "model" on disk is the fp32
adapter plus `"inference_int8": "int8"` in adapter_config.json, and loading quantizes it:
that takes well under a second for MiniLM.
"""

import warnings

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.models.surgery import unwrap

INFERENCE_INT8_CHOICES = ("int8",)  # merge, then dynamic int8 linear layers for CPU inference (`--inference-int8`)


def quantize_int8(module: nn.Module) -> list[str]:
    """Quantize, in place, every plain nn.Linear not held inside a method's wrapper; returns their names.

    Wrapped layers stay fp32 because their wrapper may read `base_layer.weight`,
    which a quantized layer no longer has; merge and unwrap first to include them.
    """
    wrappers = [n for n, m in module.named_modules() if hasattr(m, "base_layer")]
    names = [n for n, m in module.named_modules()
             if type(m) is nn.Linear and not any(n.startswith(w + ".") for w in wrappers)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated")
        torch.ao.quantization.quantize_dynamic(
            module, {n: torch.ao.quantization.default_dynamic_qconfig for n in names}, dtype=torch.qint8, inplace=True)
    return names


def merge_for_inference(loaded) -> None:
    """Fold a mergeable adapter into its base and drop the wrappers: the fp32 model int8 is compared with."""
    if loaded.method.mergeable:
        loaded.method.merge(loaded.model.backbone)
        unwrap(loaded.model.backbone)


def quantize_loaded(loaded, scheme: str) -> None:
    """Merge a mergeable adapter into its base, then quantize the encoder's linear layers (the head stays fp32)."""
    if scheme not in INFERENCE_INT8_CHOICES:
        raise SlimtuneError(f"unknown int8 inference scheme {scheme!r}; choose from {list(INFERENCE_INT8_CHOICES)}")
    merge_for_inference(loaded)
    quantize_int8(loaded.model.backbone)
