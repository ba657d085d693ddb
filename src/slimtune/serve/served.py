"""What a server knows of one loaded adapter (`ServedAdapter`), how its rows run (`serving`), and the errors of
loading and finding adapters. The registry (serve/registry.py) makes them."""

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.serve.bases import LMBase
from slimtune.serve.multi_adapter import SharedBase
from slimtune.tasks.causal_lm import CausalLMTask

SHARED = "shared"  # rows run in the shared base pass, each with its own adapter's row updates
OWN = "own copy"  # rows run through the adapter's own copy of the base
MERGED = "merged"  # an own copy with the adapter folded into its weights
ONNX = "merged, ONNX Runtime"  # a merged own copy exported to ONNX and run by ONNX Runtime (--backend onnxruntime*)


class AdapterConflict(SlimtuneError):
    """The name is taken."""


class UnknownAdapter(SlimtuneError):
    """No adapter by that name (any more)."""


class AdapterRefused(SlimtuneError):
    """The directory holds no adapter this server can serve."""


class PathRefused(SlimtuneError):
    """A path outside the allowed directory (an adapter's, or the base model its config names)."""


@dataclass(eq=False)
class ServedAdapter:
    name: str
    path: Path
    config: dict
    task: object
    serving: str
    model: nn.Module  # SHARED: the task model over a weightless base (its head reads the shared states); else whole
    tokenizer: object
    max_length: int  # tokens per row: the encoder window texts are cut to, or a causal LM's prompt + new tokens
    base_model: str
    inference_int8: str | None = None  # "int8": its base (and merged update) runs in dynamic int8
    updates: dict | None = None  # SHARED: its row updates by layer path (`Method.row_updates`)
    shared_base: SharedBase | None = None  # SHARED: the base holding its updates
    lm_base: LMBase | None = None  # a SHARED causal-lm adapter: the base its generation rows run on
    slot: int | None = None
    base_int8: str | None = None  # "int8": trained on, and served with, a weight-only int8 frozen base
    removed: bool = field(default=False)  # set on unload; queued rows for it then fail instead of running

    @property
    def labels(self) -> list[str]:
        return self.config["labels"]

    @property
    def generates(self) -> bool:
        """A causal-LM adapter: served by the generation endpoints, not /v1/predict."""
        return self.task.name == CausalLMTask.name

    def info(self) -> dict:
        return {"name": self.name, "task": self.task.name, "method": self.config["method"], "labels": self.labels,
                "serving": self.serving, "base_model": self.base_model,
                "inference_int8": self.inference_int8, "base_int8": self.base_int8,
                "path": str(self.path)}
