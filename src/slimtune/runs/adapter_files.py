"""Writing a run directory: `adapter.safetensors` (only trained weights) plus `adapter_config.json`.

The config ties the adapter to its base model by a fingerprint of the base
weights, so loading it onto another base is a clear error, not silent garbage.
Reading is `slimtune.runs.run_directory` (the checked description) and `slimtune.runs.run_loader`
(the model built from it); their names are re-exported here for existing callers.
"""

from pathlib import Path

import slimtune
from slimtune.atomic import write_json, write_safetensors
from slimtune.methods.adaptation import adapter_state
from slimtune.models.loading import Backbone
from slimtune.runs.run_directory import ADAPTER_FILE, CONFIG_FILE
from slimtune.runs.run_loader import LoadedAdapter, build_adapter_model, load_adapter, load_base_model, read_config  # noqa: F401


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
