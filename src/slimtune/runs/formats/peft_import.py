"""A Hugging Face PEFT adapter directory used wherever slimtune takes `--adapter`.

`resolve_adapter_dir` leaves a slimtune run directory as it is and turns a peft directory (its
adapter_config.json has `peft_type`) into a slimtune run directory, once: the peft config is validated,
the method whose `peft_mapping` accepts that config is attached to the base model, the peft tensors are
converted by the mapping and checked against the base's module names and shapes (an adapter made for
another model is refused; one slimtune exported is also checked by its base's fingerprint), and the result is saved as slimtune saves a run, under
$SLIMTUNE_CACHE/peft-imports/<hash of the peft files and the base>/. Everything downstream (eval, predict,
merge, inspect, serve, compare's reports) then reads an ordinary run directory.

The base model is `--model`, else `base_model_name_or_path`. Label names come from slimtune_config.json
(written by `slimtune export`), classifier_head.json, or an `id2label` entry in adapter_config.json; a
classify or ner adapter with none of these is refused.
"""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

import slimtune
from slimtune.data.files import read_json_file
from slimtune.errors import SlimtuneError
from slimtune.methods.peft_mapping_base import PROMPT_PREFIX, TUNER_PREFIX, validated
from slimtune.runs.formats.peft_export import CLASSIFIER_HEAD, CLASSIFIER_HEAD_JSON, PEFT_CONFIG, PEFT_WEIGHTS, SLIMTUNE_SIDECAR
from slimtune.runs.formats.peft_layout import POOLER_TASK_TYPE, TASK_TYPES
from slimtune.runs.run_directory import MAX_CONFIG_BYTES, read_tensors

PEFT_TASKS = {**{peft: task for task, peft in TASK_TYPES.items()}, POOLER_TASK_TYPE: "classify"}
SOURCE_FILES = (PEFT_CONFIG, PEFT_WEIGHTS, SLIMTUNE_SIDECAR, CLASSIFIER_HEAD, CLASSIFIER_HEAD_JSON)


class PeftConfigFile(BaseModel):
    """The method-independent part of a peft adapter_config.json (each mapping validates its own fields)."""

    model_config = ConfigDict(extra="allow")
    peft_type: str
    task_type: str | None = None
    base_model_name_or_path: str | None = None
    modules_to_save: list[str] | None = None
    id2label: dict[int, str] | None = None


class Sidecar(BaseModel):
    """What slimtune_config.json (a run's own config, kept by `slimtune export`) contributes on import."""

    model_config = ConfigDict(extra="ignore")
    task: str
    labels: list[str]
    base_model: str | None = None
    base_fingerprint: str | None = None
    pooling: str | None = None
    max_length: int | None = Field(default=None, gt=0)
    scheme: str | None = None


class HeadFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    pooling: str
    labels: list[str]


def is_peft_dir(path: Path) -> bool:
    """Whether `path` holds a peft adapter (not a slimtune run, whose config names a `method`)."""
    try:
        config = read_json_file(Path(path) / PEFT_CONFIG, MAX_CONFIG_BYTES)
    except SlimtuneError:
        return False  # not readable here: the run-directory reader reports it
    return isinstance(config, dict) and "peft_type" in config and "method" not in config


def resolve_adapter_dir(path, model_spec: str | None = None) -> Path:
    """`path` itself for a slimtune run; for a peft adapter directory, the slimtune run it converts to."""
    path = Path(path)
    return import_peft(path, model_spec) if is_peft_dir(path) else path


def _cache_root() -> Path:
    return Path(os.environ.get("SLIMTUNE_CACHE") or Path.home() / ".cache" / "slimtune").expanduser() / "peft-imports"


def import_peft(peft_dir: Path, model_spec: str | None = None) -> Path:
    """The converted run directory, written atomically the first time and reused while the inputs are the same."""
    digest = hashlib.sha256(f"{slimtune.__version__}\0{peft_dir.resolve()}\0{model_spec}\0".encode())
    for name in SOURCE_FILES:
        if (peft_dir / name).is_file():
            digest.update(name.encode() + (peft_dir / name).read_bytes())
    digest.update(_local_base_state(peft_dir, model_spec).encode())
    target = _cache_root() / digest.hexdigest()[:32]
    if (target / "adapter_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=target.parent))
    try:
        convert_peft_dir(peft_dir, model_spec, tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted the same adapter meanwhile
            if not (target / "adapter_config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def _local_base_state(peft_dir: Path, model_spec: str | None) -> str:
    """Names, sizes and times of a local base model's files, so a changed base is converted again."""
    from slimtune.models.loading import resolve_model_path

    try:
        spec = model_spec or _read_json(peft_dir / PEFT_CONFIG).get("base_model_name_or_path")
        base = Path(resolve_model_path(spec)) if isinstance(spec, str) else None
    except (OSError, SlimtuneError):
        return ""  # the conversion reports it
    if base is None or not base.is_dir():
        return ""
    return "".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns};" for p in sorted(base.iterdir()) if p.is_file())


def _read_json(path: Path) -> dict:
    data = read_json_file(path, MAX_CONFIG_BYTES)  # size, UTF-8, depth and syntax checked, errors name the file
    if not isinstance(data, dict):
        raise SlimtuneError(f"{path}: expected a JSON object")
    return data


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        bin_note = " (adapter_model.bin is a pickle, which slimtune never loads)" if path.with_suffix(".bin").exists() else ""
        raise SlimtuneError(f"{path.parent}: no {path.name}{bin_note}")
    return read_tensors(path, "tensors")


def mapping_method(fields: dict, where: Path):
    """The slimtune method class whose peft mapping reads this adapter_config.json."""
    from slimtune.methods.registry import available_methods

    mapped = [cls for _, cls in sorted(available_methods().items()) if cls.peft_mapping]
    readers = [cls for cls in mapped if cls.peft_mapping.accepts(fields)]
    if not readers:
        raise SlimtuneError(f"{where}: peft_type {fields.get('peft_type')!r} has no slimtune method; slimtune reads "
                            f"{', '.join(sorted({cls.peft_mapping.peft_type for cls in mapped}))}")
    return readers[0]


def _task_and_labels(config: PeftConfigFile, sidecar: Sidecar | None, head: HeadFile | None, where: Path):
    if sidecar:
        return sidecar.task, sidecar.labels
    task = "classify" if head else PEFT_TASKS.get(config.task_type or "")
    if task is None or (config.task_type == "FEATURE_EXTRACTION" and head is None):
        raise SlimtuneError(f"{where}: task_type {config.task_type!r} has no slimtune task; slimtune reads "
                            "TOKEN_CLS (ner), CAUSAL_LM (causal-lm), SEQ_CLS (classify through the pooler) and "
                            "FEATURE_EXTRACTION with classifier_head.json (classify)")
    if head:
        return task, head.labels
    if task == "causal-lm":
        return task, []
    if not config.id2label:
        raise SlimtuneError(f"{where}: a {task} adapter needs its label names; add \"id2label\": "
                            "{\"0\": \"O\", ...} to adapter_config.json")
    if sorted(config.id2label) != list(range(len(config.id2label))):
        raise SlimtuneError(f"{where}: id2label must number the labels 0..{len(config.id2label) - 1}")
    return task, [config.id2label[i] for i in range(len(config.id2label))]


def _optional(model: type[BaseModel], path: Path):
    return validated(model, _read_json(path), str(path)) if path.is_file() else None


def _head_state(model, layout, tensors: dict, prefix: str, peft_dir: Path) -> dict[str, torch.Tensor]:
    """The task model's head parameters by name: from peft's saved classifier (ner, SEQ_CLS), classifier_head
    .safetensors (classify pooled otherwise), and the pooler when trained with the head (else the base's own).
    Taken out of `tensors`, which keep the method's."""
    from slimtune.methods.adaptation import head_parameters

    linear = model.head[-1]  # classify and ner heads: dropout, then this linear layer
    state = {}
    for name, param in head_parameters(model).items():
        if name.startswith("backbone."):  # the pooler: a module to save, else the base's own
            key = prefix + layout.peft_module(name.removeprefix("backbone."))
            state[name] = tensors.pop(key) if key in tensors else param.detach().clone()
    names = {part: n for n, p in model.named_parameters() for part in ("weight", "bias") if p is getattr(linear, part)}
    if layout.head_name:
        for part, name in names.items():
            key = f"{prefix}{layout.head_name}.{part}"
            if key not in tensors:
                raise SlimtuneError(f"{peft_dir / PEFT_WEIGHTS}: no {key}: the classifier must be saved with the "
                                    "adapter (modules_to_save)")
            state[name] = tensors.pop(key)
    else:
        saved = _read_tensors(peft_dir / CLASSIFIER_HEAD)
        if set(saved) != set(names):
            raise SlimtuneError(f"{peft_dir / CLASSIFIER_HEAD}: expected tensors {' and '.join(sorted(names))}")
        state.update({name: saved[part] for part, name in names.items()})
    return state


def convert_peft_dir(peft_dir: Path, model_spec: str | None, out: Path) -> None:
    """Write the slimtune run directory for the peft adapter in `peft_dir` into `out`."""
    from slimtune.methods.adaptation import attach, load_adapter_state
    from slimtune.runs.adapter_files import run_config, save_adapter
    from slimtune.runs.formats.peft_layout import peft_layout
    from slimtune.methods.registry import create_method
    from slimtune.models.loading import fingerprint
    from slimtune.tasks import get_task

    where = peft_dir / PEFT_CONFIG
    raw = _read_json(where)
    config = validated(PeftConfigFile, raw, str(where))
    method_cls = mapping_method(raw, where)
    sidecar, head_file = _optional(Sidecar, peft_dir / SLIMTUNE_SIDECAR), _optional(HeadFile, peft_dir / CLASSIFIER_HEAD_JSON)
    task_name, labels = _task_and_labels(config, sidecar, head_file, where)
    spec = model_spec or config.base_model_name_or_path or (sidecar.base_model if sidecar else None)
    if not spec:
        raise SlimtuneError(f"{where}: no base_model_name_or_path; pass --model")
    task = get_task(task_name)
    tensors = _read_tensors(peft_dir / PEFT_WEIGHTS)  # before the base loads: a broken file fails fast
    pooling = ((sidecar.pooling if sidecar else None) or (head_file.pooling if head_file else None)
               or ("pooler" if config.task_type == POOLER_TASK_TYPE else None))
    backbone = task.load_backbone(spec, pooling=pooling, max_length=sidecar.max_length if sidecar else None)
    base_fingerprint = fingerprint(backbone.model)
    if sidecar and sidecar.base_fingerprint not in (None, base_fingerprint):
        raise SlimtuneError(f"{peft_dir} was trained on another base model (fingerprint {sidecar.base_fingerprint}); "
                            f"{spec} does not match it")
    layout = peft_layout(task_name, backbone.model.config, len(labels), backbone.pooling)
    prefix = PROMPT_PREFIX if method_cls.peft_mapping.prompt_learning else TUNER_PREFIX

    model = task.build_model(backbone, labels)
    head_state = _head_state(model, layout, tensors, prefix, peft_dir) if task_name != "causal-lm" else {}
    imported = method_cls.peft_mapping.import_(raw, tensors, layout, model.backbone, str(where))
    method = create_method(method_cls.name, imported.options)
    task.check_method(method)
    attach(model, method)
    load_adapter_state(model, method, {**{f"backbone.{k}": v for k, v in imported.state.items()}, **head_state})
    settings = {"scheme": (sidecar.scheme if sidecar else None) or "iob2"} if task_name == "ner" else {}
    run = run_config(task, method, spec, base_fingerprint, backbone, labels, settings)
    run["imported_from"] = {"format": "peft", "path": str(peft_dir.resolve()), "peft_type": config.peft_type}
    save_adapter(out, model, method, run)
