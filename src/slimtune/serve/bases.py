"""The frozen bases a server shares between adapters: building an adapter over a base without copying it, and
the causal LMs that generation lanes run on.

An adapter that shares a base is built on the base's architecture on the meta
device: its own updates and head are real tensors, the base's are not, so
loading one costs its own weights and nothing more. A method that reads the
base's weights while it is built cannot be built that way and gets its own copy.
"""

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.models.loading import Backbone, context_window, fingerprint, load_backbone
from slimtune.runs.adapter_files import build_adapter_model
from slimtune.serve.multi_adapter import SharedBase


def build_over_meta(architecture: nn.Module, causal: bool, run_dir: Path, full_config: dict,
                    tokenizer, pooling: str | None, max_length: int, task_name: str | None):
    """(task model, task, row updates) of an adapter built over `architecture`'s config on the meta device, or
    None when its method cannot be served over a shared base (no row updates, or it needs the base's weights)."""
    from transformers import AutoModel, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = (AutoModelForCausalLM if causal else AutoModel).from_config(architecture.config)
    base_tensors = {id(t) for t in [*skeleton.parameters(), *skeleton.buffers()]}
    try:
        model, method, task = build_adapter_model(run_dir, full_config,
                                                  Backbone(skeleton, tokenizer, pooling, max_length), task_name)
    except SlimtuneError:
        raise
    except Exception:  # the method computes from the base weights: an own copy answers for it
        return None
    updates = method.row_updates(model.backbone)
    own_tensors = [t for t in [*model.parameters(), *model.buffers()] if id(t) not in base_tensors]
    if updates is None or any(t.is_meta for t in own_tensors):
        return None
    return model, task, updates


@dataclass(eq=False)
class LMBase:
    """A causal LM shared by the generation rows of its adapters (and of the bare base)."""

    spec: str
    lm: nn.Module
    tokenizer: object
    fingerprint: str
    shared: SharedBase
    max_length: int

    @property
    def name(self) -> str:
        return self.spec


class LMBases:
    """Causal LM bases by spec, each loaded once, on first use."""

    def __init__(self):
        self.bases: dict[str, LMBase] = {}
        self._lock = threading.Lock()

    def get(self, spec: str) -> LMBase:
        with self._lock:
            if spec not in self.bases:
                backbone = load_backbone(spec, causal=True)
                lm = backbone.model.requires_grad_(False).eval()
                self.bases[spec] = LMBase(spec, lm, backbone.tokenizer, fingerprint(lm), SharedBase(lm.base_model),
                                          context_window(lm, backbone.tokenizer))
            return self.bases[spec]


def check_servable(adapter) -> None:
    """Refuse an adapter (a `ServedAdapter`) whose description would not be valid JSON for every client, or whose
    weights are not finite (its answers would be NaN)."""
    from slimtune.serve.schemas import AdapterInfo

    try:
        AdapterInfo.model_validate(adapter.info())
    except Exception as e:
        problem = str(e).splitlines()[1:2] or [str(e)]
        raise SlimtuneError(f"{adapter.path}: its configuration cannot be described ({problem[0].strip()})") from None
    if not _json_safe(adapter.config):
        raise SlimtuneError(f"{adapter.path}: its configuration holds a non-finite number (NaN or infinity)")
    for name, tensor in [*adapter.model.named_parameters(), *adapter.model.named_buffers()]:
        if not tensor.is_meta and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SlimtuneError(f"{adapter.path}: weight {name} holds NaN or infinite values")


def _json_safe(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(map(_json_safe, value))
    return value is None or isinstance(value, str | int | bool)
