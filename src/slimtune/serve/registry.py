"""The adapters one server holds, and how each one's rows are run.

Classify and NER adapters share one encoder base (`--model`, else the base the
first of them records, loaded when that one comes). An adapter whose method
offers per-row updates (`Method.row_updates`: LoRA and the other methods that
declare it) shares its forward pass: its updates go into the `SharedBase`, in a
slot of their own, and only its task head is kept apart (built on a weightless
copy of the base on the meta device, so loading one costs its own weights and
nothing more). Adapters of methods without row updates (prefix, adapter, full,
bitfit...), adapters pooled through the base's pooler, and adapters saved for
int8 inference (`slimtune quantize`) or trained on an int8 base run on their own
copy of the base, one pass per adapter. A lone mergeable adapter can be merged
into its copy instead.

Causal-LM adapters answer generation requests on the causal LM they record (never
the encoder base, so one server holds both kinds): those with row updates share
one copy of it per base (`LMBases`; their rows share its continuous batch, see
decoding.py), the others get their own copy.

With `inference_int8="int8"` every base is PyTorch dynamic int8: the shared encoder's
linear layers (row updates stay fp32 on top, so mixed batches still work;
methods that need the base's float weights get their own copy), and each own
copy as `load_adapter(..., quantize="int8")` makes it.

Loading reads only adapter_config.json and adapter.safetensors (no pickle), and
an adapter trained on another base is refused by its recorded fingerprint. An
adapter is checked whole before it is registered (its description is valid JSON
without non-finite numbers, its weights are finite), so a bad one is refused
and leaves nothing behind. Each task of a multi-task adapter is served as an
adapter of its own, NAME.TASK.
"""

import threading
from collections.abc import Callable
from pathlib import Path

from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.methods.registry import get_method_class
from slimtune.models.int8_inference import INFERENCE_INT8_CHOICES, quantize_int8
from slimtune.models.loading import DEFAULT_MODEL, Backbone, context_window, fingerprint, load_backbone
from slimtune.runs.adapter_files import load_adapter, read_config
from slimtune.runs.formats.peft_import import resolve_adapter_dir
from slimtune.runs.int8_keys import base_int8_of, inference_int8_of
from slimtune.runs.onnx_export import check_backend, use_backend
from slimtune.serve.bases import LMBases, build_over_meta, check_servable
from slimtune.serve.multi_adapter import BASE_SLOT, SharedBase
from slimtune.serve.served import (MERGED, ONNX, OWN, SHARED, AdapterConflict, AdapterRefused, PathRefused, ServedAdapter,
                                   UnknownAdapter)
from slimtune.tasks.causal_lm import CausalLMTask
from slimtune.tasks.multitask.files import check_task_name, is_multi, task_config

class AdapterRegistry:
    """Loaded adapters by name. Only the event loop changes the name table; weights change in the model thread
    (see `MicroBatcher.exclusive`), so batches never see a half-loaded adapter."""

    def __init__(self, base_spec: str | None, inference_int8: str | None = None, backend: str = "pytorch"):
        """`base_spec`: the encoder base, loaded now; None: the base the first classify/ner adapter records.
        `backend`: "onnxruntime" or "onnxruntime-int8" run every classify/ner adapter merged in ONNX Runtime
        (causal-lm adapters stay on PyTorch, which generates)."""
        if inference_int8 not in (None, *INFERENCE_INT8_CHOICES):
            raise SlimtuneError(f"unknown --inference-int8 {inference_int8!r}; "
                                f"choose from {list(INFERENCE_INT8_CHOICES)}")
        check_backend(backend, inference_int8)
        self.inference_int8, self.backend = inference_int8, backend
        self.base_spec = base_spec
        self.base: Backbone | None = None
        self.shared: SharedBase | None = None
        self._base_lock = threading.Lock()  # two adapters loading at once must not both load the base
        self.adapters: dict[str, ServedAdapter] = {}
        self._pending: set[str] = set()
        self.lm_bases = LMBases()
        if base_spec is not None:
            self._encoder_base(base_spec)

    def _encoder_base(self, spec: str | None) -> Backbone:
        """The shared encoder base, loaded from `spec` (or the default model) on first use."""
        with self._base_lock:
            if self.base is None:
                base = load_backbone(spec or DEFAULT_MODEL)
                self.base_fingerprint = fingerprint(base.model)
                if getattr(base.model, "pooler", None) is not None:
                    base.model.pooler = None  # no shared head reads it; pooler-pooled adapters get their own copy
                if self.inference_int8:
                    quantize_int8(base.model)
                self.base_spec = spec or DEFAULT_MODEL
                self.shared = SharedBase(base.model)
                self.base = base
            return self.base

    def encoder_base_target(self) -> ServedAdapter:
        """The bare encoder base as a target of shared passes (embeddings of the base itself): no slot's updates."""
        return ServedAdapter(self.base_spec, Path(), {"labels": [], "method": "none"}, None, SHARED, None,
                             self.base.tokenizer, self.base.max_length, self.base_spec, self.inference_int8, slot=BASE_SLOT)

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
            config = read_config(resolve_adapter_dir(run_dir))  # a peft adapter directory, converted
        except SlimtuneError as e:
            raise AdapterRefused(str(e)) from None
        return [(f"{name}.{task}", task) for task in config["tasks"]] if is_multi(config) else [(name, None)]

    def prepare(self, name: str, run_dir: Path, merge: bool = False, task_name: str | None = None,
                confine: Callable[[str], None] | None = None) -> ServedAdapter:
        """Read, build and check an adapter (slow; any thread). Nothing is served until `install` and `register`.

        `task_name` picks one task of a multi-task adapter. `confine(spec)` is called before a base model that
        the adapter's config names is loaded, and raises to refuse it (runtime loads stay inside the allowed
        directory)."""
        try:
            adapter = self._prepare(name, Path(run_dir), merge, task_name, confine)
            check_servable(adapter)
            return adapter
        except PathRefused:
            raise
        except SlimtuneError as e:
            raise AdapterRefused(str(e)) from None
        except Exception as e:  # a malformed file from outside: refuse it, whatever broke
            raise AdapterRefused(f"{run_dir}: not a usable adapter ({type(e).__name__}: {e})") from None

    def _prepare(self, name: str, run_dir: Path, merge: bool, task_name: str | None,
                 confine: Callable[[str], None] | None) -> ServedAdapter:
        run_dir = resolve_adapter_dir(run_dir)  # a peft adapter directory becomes a run directory
        full_config = read_config(run_dir)
        check_task_name(full_config, task_name, run_dir)
        config = task_config(full_config, task_name) if is_multi(full_config) else full_config
        if not isinstance(config.get("base_model", ""), str | None):
            raise SlimtuneError(f"{run_dir}: base_model must be a string")
        method_class = get_method_class(config["method"])
        shareable = not (merge or inference_int8_of(config) or base_int8_of(config)
                         or method_class.row_updates is Method.row_updates
                         or (self.inference_int8 and method_class.needs_float_base_weights))
        if config["task"] == CausalLMTask.name:
            spec = config.get("base_model") or DEFAULT_MODEL
            if confine is not None and spec not in self.lm_bases.bases:
                confine(spec)
            if not shareable or self.inference_int8:
                return self._own_copy(name, run_dir, config, merge, None, task_name)  # checked against its own base
            return self._shared_causal(name, run_dir, full_config, config, spec, task_name)
        if self.base is None and confine is not None:
            confine(config.get("base_model") or DEFAULT_MODEL)
        if self.backend != "pytorch":
            return self._onnx_copy(name, run_dir, config, task_name)
        base = self._encoder_base(config.get("base_model"))
        if config["base_fingerprint"] != self.base_fingerprint:
            raise SlimtuneError(f"{run_dir} was trained on another base model (fingerprint "
                                f"{config['base_fingerprint']}); this server holds {self.base_spec} "
                                f"(fingerprint {self.base_fingerprint})")
        pooling = config.get("pooling") or base.pooling
        if not shareable or pooling == "pooler":
            return self._own_copy(name, run_dir, config, merge, self.base_spec, task_name)
        window = base.max_length
        max_length = min(config.get("max_length") or window, window)
        built = build_over_meta(base.model, False, run_dir, full_config, base.tokenizer, pooling, max_length,
                                task_name)
        if built is None:
            return self._own_copy(name, run_dir, config, merge, self.base_spec, task_name)
        model, task, updates = built
        return ServedAdapter(name, run_dir, config, task, SHARED, model, base.tokenizer, max_length, self.base_spec,
                             self.inference_int8, updates, self.shared)

    def _shared_causal(self, name: str, run_dir: Path, full_config: dict, config: dict, spec: str,
                       task_name: str | None) -> ServedAdapter:
        """A causal-lm adapter whose generation rows run on the shared copy of its base."""
        base = self.lm_bases.get(spec)
        if config["base_fingerprint"] != base.fingerprint:
            raise SlimtuneError(f"{run_dir} was trained on a different base model (fingerprint "
                                f"{config['base_fingerprint']}); {spec} does not match it")
        built = build_over_meta(base.lm, True, run_dir, full_config, base.tokenizer, None, base.max_length,
                                task_name)
        if built is None:
            return self._own_copy(name, run_dir, config, False, None, task_name)
        model, task, updates = built
        return ServedAdapter(name, run_dir, config, task, SHARED, model, base.tokenizer, base.max_length, spec,
                             None, updates, base.shared, base)

    def _own_copy(self, name: str, run_dir: Path, config: dict, merge: bool, spec: str | None,
                  task_name: str | None) -> ServedAdapter:
        """The adapter on its own copy of the base (`spec`, else the one it records), quantized and merged as asked.

        An adapter trained on an int8 base keeps that base as it is; one saved by `slimtune quantize` is int8
        whatever the server's setting (`load_adapter` reads that from its config)."""
        scheme = None if base_int8_of(config) else (self.inference_int8 or inference_int8_of(config))
        # with a scheme: merged where the method allows, then quantized
        loaded = load_adapter(run_dir, spec, scheme, task_name=task_name)
        if merge:
            if not loaded.method.mergeable or base_int8_of(config):
                why = "it was trained on an int8 base" if base_int8_of(config) else "the method does not merge"
                raise SlimtuneError(f"{run_dir}: method {loaded.method.name} cannot be merged ({why})")
            if not scheme:
                loaded.method.merge(loaded.model.backbone)
        if loaded.task.name == CausalLMTask.name:
            max_length = context_window(loaded.model.lm, loaded.backbone.tokenizer)
        else:
            max_length = loaded.backbone.max_length
        base_model = spec or config.get("base_model") or DEFAULT_MODEL
        return ServedAdapter(name, run_dir, config, loaded.task, MERGED if merge else OWN, loaded.model,
                             loaded.backbone.tokenizer, max_length, base_model, scheme,
                             base_int8=base_int8_of(config))

    def _onnx_copy(self, name: str, run_dir: Path, config: dict, task_name: str | None) -> ServedAdapter:
        """The adapter merged into its own copy of the base (`--model`, else the one it records), exported to ONNX
        and run by ONNX Runtime in fp32 or dynamic int8."""
        loaded = load_adapter(run_dir, self.base_spec, None, task_name=task_name)  # checks the base's fingerprint
        use_backend(loaded, self.backend)
        base_model = self.base_spec or config.get("base_model") or DEFAULT_MODEL
        return ServedAdapter(name, run_dir, config, loaded.task, ONNX, loaded.model, loaded.backbone.tokenizer,
                             loaded.backbone.max_length, base_model, "int8" if self.backend.endswith("int8") else None)

    def install(self, adapter: ServedAdapter) -> None:
        """Put a shared adapter's updates into a free slot of its base (model thread: no batch runs meanwhile).
        On failure nothing of it stays in the shared base."""
        if adapter.serving != SHARED:
            return
        try:
            adapter.slot = adapter.shared_base.install(adapter.updates, adapter.model.backbone)
        except Exception as e:
            raise AdapterRefused(f"{adapter.path}: {e}") from None

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
        """Drop an unregistered adapter's updates from its shared base (model thread)."""
        if adapter.slot is not None:
            adapter.shared_base.remove(adapter.slot)
