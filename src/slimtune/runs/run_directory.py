"""A run directory, read and checked once: `adapter_config.json` against its schema and `adapter.safetensors`'s header.

`read_run` refuses anything malformed (not UTF-8, not a JSON object, wrong types or ranges, an unknown
task or method, options the method rejects, a truncated or non-safetensors adapter file) before a
single tensor is allocated. The `RunDirectory` it returns is what every reader uses: the loader
(`slimtune.runs.run_loader`), `slimtune inspect`, the server. A multi-task run gives one `TaskView`
per task, the same shape as a single-task run's.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open

from slimtune.data.files import read_json_file
from slimtune.errors import SlimtuneError
from slimtune.runs.run_schema import MULTI, RunConfig, check_meaning, option_strings, validation_error_line
from slimtune.tasks.multitask.files import check_task_name, task_config

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"
MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a real one is a few KiB; labels of a large tag set stay far below this


@dataclass(frozen=True)
class TaskView:
    """One task of a run as a single-task run: `config` typed, `data` the same as a dict (what tasks and writers read)."""

    config: RunConfig
    data: dict
    task_name: str | None  # the task's name in a multi-task run, else None

    @property
    def labels(self) -> list[str]:
        return self.config.labels


@dataclass(frozen=True)
class RunDirectory:
    path: Path
    config: RunConfig
    data: dict  # adapter_config.json as written (validated)
    tensor_shapes: dict[str, tuple[int, ...]]  # adapter.safetensors, from its header: name → shape
    adapter_bytes: int

    @property
    def adapter_path(self) -> Path:
        return self.path / ADAPTER_FILE

    @property
    def is_multi(self) -> bool:
        return self.config.task == MULTI

    @property
    def task_names(self) -> list[str]:
        """The tasks of a multi-task run (served as NAME.TASK); empty for a single-task run."""
        return list(self.config.tasks) if self.is_multi else []

    def view(self, task_name: str | None = None) -> TaskView:
        """The run as one single-task run: itself, or (multi-task, `task_name` required) one of its tasks."""
        check_task_name(self.data, task_name, self.path)
        if not self.is_multi:
            return TaskView(self.config, self.data, None)
        data = task_config(self.data, task_name)
        return TaskView(RunConfig.model_validate(data), data, task_name)

    def method_options(self) -> dict[str, str]:
        """The recorded options as `--set` strings (what `create_method` takes)."""
        return option_strings(self.config.options)

    def load_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of adapter.safetensors (the header was checked on reading), all finite."""
        return read_tensors(self.adapter_path)


def read_tensors(path, what: str = "adapter") -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file `path`, all finite; SlimtuneError naming the file and `what` it should
    hold when it is missing, unreadable or malformed."""
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, RuntimeError) as e:
        raise SlimtuneError(f"{path}: cannot read {what} ({e})") from None
    return finite(path, tensors)


def finite(path, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` unchanged, or SlimtuneError if one holds NaN or infinity: every answer computed through it would be
    NaN, so an adapter file that holds one is refused where it is read rather than served or evaluated."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SlimtuneError(f"{path}: tensor {name} holds NaN or infinite values")
    return tensors


def read_run(run_dir) -> RunDirectory:
    """Read and check a run directory once; SlimtuneError, in one line, for anything malformed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SlimtuneError(f"{run_dir}: no such adapter directory")
    if not (run_dir / CONFIG_FILE).is_file():
        raise SlimtuneError(f"{run_dir}: not an adapter directory (no {CONFIG_FILE})")
    return from_config(run_dir, read_json_file(run_dir / CONFIG_FILE, MAX_CONFIG_BYTES))


def from_config(run_dir, data) -> RunDirectory:
    """A run directory described by an already-read config `data`, checked like `read_run` checks the file's."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not isinstance(data, dict):
        raise SlimtuneError(f"{path}: expected a JSON object, got {_json_kind(data)}")
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as e:
        raise SlimtuneError(f"{path}: {validation_error_line(e)}") from None
    try:
        check_meaning(config)
    except SlimtuneError as e:
        raise SlimtuneError(f"{path}: {e}") from None
    shapes, size = _read_header(run_dir / ADAPTER_FILE)
    return RunDirectory(run_dir, config, data, shapes, size)


def _read_header(path: Path) -> tuple[dict[str, tuple[int, ...]], int]:
    """Tensor shapes from a safetensors header, without reading the data; the file must hold all it declares."""
    if not path.is_file():
        raise SlimtuneError(f"{path}: cannot read adapter (no such file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, RuntimeError, json.JSONDecodeError) as e:
        raise SlimtuneError(f"{path}: not a complete safetensors file ({str(e).splitlines()[0] if str(e) else e})") \
            from None
    return shapes, path.stat().st_size


def _json_kind(value) -> str:
    return {type(None): "null", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")
