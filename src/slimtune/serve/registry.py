"""The adapters one server holds over its one base model, and how each one's rows are run.

LoRA adapters share the base: their factors go into the `SharedLoRABase`, each in
its own slot, and only their task head is kept apart (built on a weightless
copy of the base on the meta device, so loading one costs its own weights and
nothing more). Adapters of other methods, which change the base in ways that
cannot be applied per row (prefix, adapter, full, bitfit...), and LoRA adapters
pooled through the base's pooler, run on their own copy of the base, one pass
per adapter. A lone mergeable adapter can be merged into its copy instead.

Loading reads only adapter_config.json and adapter.safetensors (no pickle), and
an adapter trained on another base is refused by its recorded fingerprint. Each
task of a multi-task adapter is served as an adapter of its own, NAME.TASK.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from slimtune.adapter_files import build_adapter_model, load_adapter, read_config
from slimtune.errors import SlimtuneError
from slimtune.methods.lora import LoRA
from slimtune.multitask.files import check_task_name, is_multi, task_config
from slimtune.models.loading import DEFAULT_MODEL, Backbone, fingerprint, load_backbone
from slimtune.serve.multi_lora import SharedLoRABase

SHARED = "shared-lora"  # rows run in the shared base pass, with their own LoRA delta
OWN = "own-model"  # rows run through the adapter's own copy of the base
MERGED = "merged"  # an own copy with the adapter folded into its weights


class AdapterConflict(SlimtuneError):
    """The name is taken."""


class UnknownAdapter(SlimtuneError):
    """No adapter by that name (any more)."""


class AdapterRefused(SlimtuneError):
    """The directory holds no adapter this server can serve."""


@dataclass(eq=False)
class ServedAdapter:
    name: str
    path: Path
    config: dict
    task: object
    serving: str
    model: nn.Module  # SHARED: the task model over a weightless base (its head reads the shared states); else whole
    max_length: int
    slot: int | None = None
    removed: bool = field(default=False)  # set on unload; queued rows for it then fail instead of running

    @property
    def labels(self) -> list[str]:
        return self.config["labels"]

    def info(self) -> dict:
        return {"name": self.name, "task": self.task.name, "method": self.config["method"], "labels": self.labels,
                "serving": self.serving, "path": str(self.path)}


class AdapterRegistry:
    """Loaded adapters by name over one base. Only the event loop changes the name table; weights change in
    the model thread (see `MicroBatcher.exclusive`), so batches never see a half-loaded adapter."""

    def __init__(self, base_spec: str | None):
        self.base_spec = base_spec or DEFAULT_MODEL
        self.base = load_backbone(self.base_spec)
        self.base_fingerprint = fingerprint(self.base.model)
        if getattr(self.base.model, "pooler", None) is not None:
            self.base.model.pooler = None  # no shared head reads it; pooler-pooled adapters get their own copy
        self.shared = SharedLoRABase(self.base.model)
        self.adapters: dict[str, ServedAdapter] = {}
        self._pending: set[str] = set()
        self._slots: set[int] = set()  # slots holding factors; only the model thread touches it

    def get(self, name: str) -> ServedAdapter:
        adapter = self.adapters.get(name)
        if adapter is None:
            loaded = ", ".join(sorted(self.adapters)) or "none"
            raise UnknownAdapter(f"unknown adapter {name!r}; loaded: {loaded}")
        return adapter

    def reserve(self, name: str) -> None:
        """Claim a name before a slow load, so two loads under one name cannot both succeed."""
        if name in self.adapters or name in self._pending:
            raise AdapterConflict(f"an adapter named {name!r} is already loaded")
        self._pending.add(name)

    def release(self, name: str) -> None:
        self._pending.discard(name)

    def served_tasks(self, name: str, run_dir: Path) -> list[tuple[str, str | None]]:
        """(served name, task name) for each adapter a directory holds: NAME.TASK per task of a multi-task one."""
        try:
            config = read_config(Path(run_dir))
        except SlimtuneError as e:
            raise AdapterRefused(str(e)) from None
        return [(f"{name}.{task}", task) for task in config["tasks"]] if is_multi(config) else [(name, None)]

    def prepare(self, name: str, run_dir: Path, merge: bool = False, task_name: str | None = None) -> ServedAdapter:
        """Read and build an adapter (slow; any thread). Nothing is served until `install` and `register`.

        `task_name` picks one task of a multi-task adapter."""
        try:
            return self._prepare(name, Path(run_dir), merge, task_name)
        except SlimtuneError as e:
            raise AdapterRefused(str(e)) from None
        except Exception as e:  # a malformed file from outside: refuse it, whatever broke
            raise AdapterRefused(f"{run_dir}: not a usable adapter ({type(e).__name__}: {e})") from None

    def _prepare(self, name: str, run_dir: Path, merge: bool, task_name: str | None) -> ServedAdapter:
        full_config = read_config(run_dir)
        check_task_name(full_config, task_name, run_dir)
        config = task_config(full_config, task_name) if is_multi(full_config) else full_config
        if config["base_fingerprint"] != self.base_fingerprint:
            raise SlimtuneError(f"{run_dir} was trained on another base model (fingerprint "
                                f"{config['base_fingerprint']}); this server holds {self.base_spec} "
                                f"(fingerprint {self.base_fingerprint})")
        pooling = config.get("pooling") or self.base.pooling
        if merge or config["method"] != LoRA.name or pooling == "pooler":
            loaded = load_adapter(run_dir, self.base_spec, task_name=task_name)
            if merge:
                if not loaded.method.mergeable:
                    raise SlimtuneError(f"method {loaded.method.name} cannot be merged")
                loaded.method.merge(loaded.model.backbone)
            return ServedAdapter(name, run_dir, config, loaded.task, MERGED if merge else OWN, loaded.model,
                                 loaded.backbone.max_length)
        window = self.base.max_length
        max_length = min(config.get("max_length") or window, window)
        skeleton = Backbone(self._weightless_base(), self.base.tokenizer, pooling, max_length)
        model, _, task = build_adapter_model(run_dir, full_config, skeleton, task_name)
        return ServedAdapter(name, run_dir, config, task, SHARED, model, max_length)

    def _weightless_base(self) -> nn.Module:
        """The base architecture on the meta device: LoRA factors and heads built on it are real, it is not."""
        from transformers import AutoModel

        with torch.device("meta"):
            return AutoModel.from_config(self.base.model.config)

    def install(self, adapter: ServedAdapter) -> None:
        """Put a shared adapter's factors into a free slot (model thread: no batch runs meanwhile)."""
        if adapter.serving != SHARED:
            return
        slot = next(slot for slot in range(len(self._slots) + 1) if slot not in self._slots)
        self.shared.add(slot, adapter.model.backbone)
        self._slots.add(slot)
        adapter.slot = slot

    def register(self, adapter: ServedAdapter) -> None:
        """Make an installed adapter servable (event loop)."""
        self.release(adapter.name)
        self.adapters[adapter.name] = adapter

    def unregister(self, name: str) -> ServedAdapter:
        """Stop serving `name` (event loop); its queued rows fail. Free its weights with `uninstall`."""
        adapter = self.get(name)
        del self.adapters[name]
        adapter.removed = True
        return adapter

    def uninstall(self, adapter: ServedAdapter) -> None:
        """Drop an unregistered adapter's factors from the shared base (model thread)."""
        if adapter.slot is not None:
            self.shared.remove(adapter.slot)
            self._slots.discard(adapter.slot)
