"""A run directory on disk: `adapter.safetensors` (only trained weights) plus `adapter_config.json`.

The config ties the adapter to its base model by a fingerprint of the base
weights, so loading it onto another base is a clear error, not silent garbage.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import slimtune
from slimtune.adaptation import adapter_state, attach, load_adapter_state
from slimtune.atomic import write_json, write_safetensors
from slimtune.errors import SlimtuneError
from slimtune.methods.registry import create_method
from slimtune.compression.int8 import quantize_frozen_linears
from slimtune.models.loading import Backbone, fingerprint
from slimtune.multitask.files import check_task_name, is_multi, task_config, task_state
from slimtune.tasks import get_task

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"


@dataclass
class LoadedAdapter:
    model: torch.nn.Module
    method: object  # None for a base model without adapter
    task: object
    backbone: Backbone
    config: dict

    @property
    def labels(self) -> list[str]:
        return self.config["labels"]


def run_config(task, method, model_spec: str | None, base_fingerprint: str, backbone: Backbone, labels,
               task_settings: dict | None = None) -> dict:
    """adapter_config.json: everything needed to rebuild the model, plus what the task asks to keep."""
    return {
        "slimtune_version": slimtune.__version__,
        "task": task.name,
        "method": method.name,
        "options": method.options_dict(),
        "base_model": model_spec,
        "base_fingerprint": base_fingerprint,
        "pooling": backbone.pooling,
        "max_length": backbone.max_length,
        "labels": labels,
        **(task_settings or {}),
    }


def save_adapter(run_dir: Path, model, method, config: dict) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_safetensors(run_dir / ADAPTER_FILE, adapter_state(model, method, export=True), metadata={"format": "slimtune"})
    write_json(run_dir / CONFIG_FILE, config)
    return run_dir / ADAPTER_FILE


def read_config(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SlimtuneError(f"{run_dir}: no such adapter directory")
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise SlimtuneError(f"{run_dir}: not an adapter directory (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SlimtuneError(f"{path}: not valid JSON ({e.msg})") from None
    multi = config.get("task") == "multi"  # a multi-task adapter lists its tasks' labels under `tasks`
    missing = {"task", "method", "options", "base_fingerprint", "tasks" if multi else "labels"} - set(config)
    if missing:
        raise SlimtuneError(f"{path}: missing keys {sorted(missing)}")
    return config


def load_adapter(run_dir: Path, model_spec: str | None = None, quantize: str | None = None,
                 task_name: str | None = None) -> LoadedAdapter:
    """Rebuild a trained model from its run directory; `model_spec` overrides the recorded base.

    `quantize` ("int8"), or a "quantize" entry in the config (written by `slimtune quantize`),
    merges the adapter where it can and quantizes the encoder for CPU inference.
    `task_name` picks one task of a multi-task adapter, loaded as a single-task one.
    """
    from slimtune.formats.peft_import import resolve_adapter_dir

    run_dir = resolve_adapter_dir(run_dir, model_spec)  # a peft adapter directory becomes a run directory
    full_config = read_config(run_dir)
    check_task_name(full_config, task_name, run_dir)
    config = task_config(full_config, task_name) if is_multi(full_config) else full_config
    spec = model_spec or config.get("base_model")
    task = get_task(config["task"])
    backbone = task.load_backbone(spec, pooling=config.get("pooling"), max_length=config.get("max_length"))
    if fingerprint(backbone.model) != config["base_fingerprint"]:
        raise SlimtuneError(
            f"{run_dir} was trained on a different base model (fingerprint {config['base_fingerprint']}); "
            f"{spec or 'the default model'} does not match it"
        )
    model, method, task = build_adapter_model(run_dir, full_config, backbone, task_name)
    loaded = LoadedAdapter(model, method, task, backbone, config)
    scheme = quantize or config.get("quantize")
    if scheme and config.get("base_quantize"):
        raise SlimtuneError(f"{run_dir} was trained on an {config['base_quantize']} base already; drop --quantize")
    if scheme:
        from slimtune.compression.dynamic_int8 import quantize_loaded

        quantize_loaded(loaded, scheme)
    return loaded


def build_adapter_model(run_dir: Path, config: dict, backbone: Backbone,
                        task_name: str | None = None) -> tuple[torch.nn.Module, object, object]:
    """(task model, method, task): the adapter of `run_dir` attached to `backbone.model` and loaded, in eval mode.

    The caller has checked that `backbone` is the base the adapter was trained on. For a multi-task
    adapter, `task_name` picks the task (see `slimtune.multitask.files`).
    """
    check_task_name(config, task_name, run_dir)
    multi_config = config if is_multi(config) else None
    if multi_config:
        config = task_config(multi_config, task_name)
    task = get_task(config["task"])
    method = create_method(config["method"], {k: _as_option(v) for k, v in config["options"].items()})
    task.check_method(method)
    model = task.build_model(backbone, config["labels"])
    attach(model, method)
    if config.get("base_quantize"):  # the adapter was trained on (and is used with) the int8 base
        quantize_frozen_linears(model.backbone)
    try:
        state = load_file(str(Path(run_dir) / ADAPTER_FILE))
    except (FileNotFoundError, SafetensorError, OSError) as e:
        raise SlimtuneError(f"{Path(run_dir) / ADAPTER_FILE}: cannot read adapter ({e})") from None
    if multi_config:
        state = task_state(state, multi_config, task_name)
    load_adapter_state(model, method, state)
    model.eval()
    return model, method, task


def load_base_model(task_name: str, model_spec: str | None, max_length: int | None = None,
                    quantize: str | None = None) -> LoadedAdapter:
    """A pretrained model as it is, no adapter: zero-shot scores and generation for tasks that need no new head."""
    task = get_task(task_name)
    if task.name != "causal-lm":
        raise SlimtuneError(f"task {task.name} needs a trained head; pass --adapter")
    backbone = task.load_backbone(model_spec, max_length=max_length)
    model = task.build_model(backbone, [])
    model.requires_grad_(False)
    if quantize:
        quantize_frozen_linears(model.backbone)
    config = {"task": task.name, "base_model": model_spec, "labels": [], "base_quantize": quantize}
    return LoadedAdapter(model.eval(), None, task, backbone, config)


def _as_option(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)
