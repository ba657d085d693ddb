"""`eval` and `predict` on ONNX Runtime from a kept export: the PyTorch model is built and exported once.

An export is fixed by its inputs: the run's adapter.safetensors and adapter_config.json (their contents), the base
model's files (path, size and modification time of each, as the fingerprint cache identifies them), the backend
(fp32 or int8), the task of a multi-task run, and the versions of slimtune and of the packages that trace, quantize
and run it. Their sha256 names a directory $SLIMTUNE_CACHE/onnx/<key>/ holding the graph, the tokenizer and
onnx_config.json (what the run does not record: the effective token limit, the graph's inputs, each file's size).
A later call with the same inputs reads the run's checked description and that directory only: it builds no
PyTorch model and imports no transformers model code (about 2 s of a 20-sentence eval). A changed base or adapter
file changes the key, so the whole path runs again: load, fingerprint check, export.

Entries are written as every slimtune output is (a marked temporary directory renamed into place,
slimtune.ownership); a damaged one (unreadable onnx_config.json, a file of the wrong size, a graph or tokenizer that
does not load) is exported again; the newest ONNX_KEPT entries are kept, and only marked ones are ever removed.
"""

import contextlib
import hashlib
import json
import os
import re
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import slimtune
from slimtune.atomic import write_json
from slimtune.cache import cache_dir
from slimtune.data.files import read_json_file
from slimtune.errors import SlimtuneError
from slimtune.models.loading import Backbone, file_listing, resolve_model_path
from slimtune.models.onnx_runtime import INPUT_NAMES, OnnxRuntimeModel
from slimtune.ownership import (BUILDING, COMPLETE, MARKER, commit, read_marker, remove_owned, running_here,
                                temp_dir_for)
from slimtune.runs.onnx_export import (CONFIG_FILE, FP32_FILE, INT8_FILE, check_backend, check_exportable,
                                       export_for_backend, use_backend)
from slimtune.runs.run_directory import ADAPTER_FILE, RunDirectory, TaskView, read_run
from slimtune.runs.run_directory import CONFIG_FILE as RUN_CONFIG_FILE
from slimtune.runs.run_loader import LoadedAdapter, load_adapter
from slimtune.tasks import get_task

KIND = "onnx-cache"  # the ownership marker's kind: what the bound may remove
FORMAT = "slimtune-onnx-cache-1"
ONNX_KEPT = 8  # entries kept (MiniLM: 90 MB fp32, 23 MB int8 each)
PACKAGES = ("torch", "transformers", "tokenizers", "onnxruntime", "onnx", "onnxscript")  # their versions key it
MAX_ENTRY_CONFIG_BYTES = 64 * 1024
_ENTRY_NAME = re.compile(r"^[0-9a-f]{64}$")
_LEFTOVER_NAME = re.compile(r"^\.[0-9a-f]{64}\.")  # a temporary (or trash) directory of an entry


class EntryConfig(BaseModel):
    """onnx_config.json of a cache entry."""

    model_config = ConfigDict(extra="forbid", strict=True)
    format: Literal[FORMAT]
    key: str
    model_file: Literal[FP32_FILE, INT8_FILE]
    max_length: int = Field(ge=1)  # the token limit the model was used with: min(run's, base's window)
    inputs: list[Literal[INPUT_NAMES]]
    tokenizer: Literal["tokenizers", "auto"]  # how to load the saved tokenizer: see _tokenizer_loader
    tokenizer_inputs: list[str]  # the tokenizer's model_input_names
    sizes: dict[str, int]  # bytes of every file of the entry but this one and the marker


def onnx_cache_root() -> Path:
    return cache_dir() / "onnx"


def load_onnx_adapter(run_dir, model_spec: str | None, backend: str, task_name: str | None = None) -> LoadedAdapter:
    """The run in `run_dir` (one task of a multi-task run) run by ONNX Runtime with `backend`, from the cache when
    it holds its export; otherwise loaded with PyTorch (base fingerprint checked), exported, and kept.

    From the cache, `method` is None (the adapter is merged into the graph) and `backbone.model` is None: there
    is no PyTorch model, only the tokenizer, pooling and token limit."""
    from slimtune.runs.formats.peft_import import resolve_adapter_dir

    check_backend(backend)
    run = read_run(resolve_adapter_dir(run_dir, model_spec))
    view = run.view(task_name)
    task = get_task(view.config.task)
    check_exportable(task, view.data)
    key = export_key(run, view, model_spec, backend)
    entry = onnx_cache_root() / key if key else None
    if entry is not None:
        cached = _from_entry(entry, key, view, task, run)
        if cached is not None:
            return cached
    tmp = _new_entry_dir(entry) if entry is not None else None
    if tmp is None:  # nothing to key it by (a hub id not in the local hub cache) or no writable cache
        loaded = load_adapter(run.path, model_spec, None, task_name)
        use_backend(loaded, backend)
        return loaded
    try:
        loaded = load_adapter(run.path, model_spec, None, task_name)
        if export_key(run, view, model_spec, backend) != key:  # the files again, now that they have been read
            raise SlimtuneError(f"{run.path}: the adapter or its base changed while it was read; run again")
        try:
            model_file = _write_entry(loaded, backend, tmp, key)
            commit(tmp, entry)
        except OSError as e:
            raise SlimtuneError(f"{entry.parent}: cannot write the ONNX export ({e.strerror}); free space there or "
                                "set SLIMTUNE_CACHE") from None
    except BaseException:
        if tmp.exists():
            remove_owned(tmp)
        raise
    _bound(entry)
    print(f"onnx: exported to {entry}; later calls with this adapter and base reuse it", file=sys.stderr)
    loaded.model = OnnxRuntimeModel(entry / model_file)
    return loaded


def export_key(run: RunDirectory, view: TaskView, model_spec: str | None, backend: str) -> str | None:
    """sha256 over everything the exported graph depends on; None when the base has no local files to identify."""
    spec = model_spec or view.config.base_model
    base = base_files(spec)
    if base is None:
        return None
    adapter = {}
    for name in (ADAPTER_FILE, RUN_CONFIG_FILE):
        try:
            with open(run.path / name, "rb") as f:
                adapter[name] = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            raise SlimtuneError(f"{run.path / name}: cannot read ({e.strerror})") from None
    identity = {"format": FORMAT, "backend": backend, "task_name": view.task_name, "base_spec": spec,
                "base_files": base, "adapter": adapter, "versions": versions()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def base_files(spec: str | None) -> list | None:
    """The base model's directory and (relative path, size, mtime_ns) of each of its files, hidden ones aside;
    for a hub id, its snapshot in the local hub cache. None when it has none there."""
    path = Path(resolve_model_path(spec))
    if not path.is_dir():
        path = _hub_snapshot(str(path))
        if path is None:
            return None
    return [str(path.resolve()), file_listing(path)]


def _hub_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not downloaded, or not a repository id: huggingface_hub raises several kinds
        return None


def versions() -> dict[str, str | None]:
    """slimtune's version and those of the packages that write and run the graph, read without importing them."""
    found = {"slimtune": slimtune.__version__}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _read_entry(entry: Path, key: str) -> EntryConfig:
    """onnx_config.json checked, and every file it lists present at its size; SlimtuneError saying what is wrong."""
    try:
        config = EntryConfig.model_validate(read_json_file(entry / CONFIG_FILE, MAX_ENTRY_CONFIG_BYTES))
    except ValidationError as e:
        raise SlimtuneError(f"{entry / CONFIG_FILE}: {e.errors()[0]['msg']}") from None
    if config.key != key or config.model_file not in config.sizes:
        raise SlimtuneError(f"{entry / CONFIG_FILE}: not this entry's description")
    for name, size in config.sizes.items():
        path = entry / name
        if Path(name).name != name or not path.is_file() or path.stat().st_size != size:
            raise SlimtuneError(f"{path}: missing, or not the {size:,} bytes written")
    return config


def _from_entry(entry: Path, key: str, view: TaskView, task, run: RunDirectory) -> LoadedAdapter | None:
    """The cached export as a loaded adapter, or None: no entry, one of someone else's, or a damaged one (said on
    stderr; the caller exports again and replaces it)."""
    marker = read_marker(entry) if entry.is_dir() else None
    if marker is None or marker.get("kind") != KIND or marker.get("state") != COMPLETE:
        return None
    try:
        config = _read_entry(entry, key)
        model = OnnxRuntimeModel(entry / config.model_file)
        tokenizer = _load_tokenizer(entry, config.tokenizer, config.tokenizer_inputs)
    except SlimtuneError as e:
        print(f"onnx: the cached export is damaged ({e}); exporting again", file=sys.stderr)
        return None
    with contextlib.suppress(OSError):
        os.utime(entry)  # most recently used: the bound keeps it
    task.use_settings(view.data)
    backbone = Backbone(None, tokenizer, view.config.pooling, config.max_length)
    return LoadedAdapter(model, None, task, backbone, view.data, run)


def _load_tokenizer(directory: Path, loader: str, input_names: list[str]):
    """The tokenizer saved beside the graph. "tokenizers": transformers' generic tokenizer over tokenizer.json,
    which imports neither model code nor the scan of transformers' model packages (1 s of a short eval); "auto":
    AutoTokenizer, which picks the checkpoint's tokenizer class (no model code either)."""
    try:
        if loader == "tokenizers":
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(directory), model_input_names=input_names)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as e:  # tokenizers and transformers raise many kinds for a file they cannot use
        raise SlimtuneError(f"{directory}: tokenizer does not load ({str(e).splitlines()[0] if str(e) else e})") \
            from None


PROBE_TEXTS = ["Hello World, a GRIPPING film!", "naïve café, déjà vu", "東京 2024 — e-mail a@b.io ##x [SEP]",
               "a tedious " * 40]
PROBE_WORDS = [["Angela", "Merkel", "met", "Macron", "in", "Paris", "."], ["e-mail", "naïve", "東京"]]


def _tokenizer_loader(tokenizer, directory: Path) -> str:
    """"tokenizers" when the generic tokenizer over `directory`'s tokenizer.json encodes as `tokenizer` does on
    the calls slimtune's tasks make (probe texts, truncated; pre-split words and their word ids); else "auto"."""
    try:
        generic = _load_tokenizer(directory, "tokenizers", list(tokenizer.model_input_names))
        for texts, options in ((PROBE_TEXTS, {"truncation": True, "max_length": 32}),
                               (PROBE_WORDS, {"is_split_into_words": True})):
            ours, theirs = generic(texts, **options), tokenizer(texts, **options)
            if dict(ours) != dict(theirs) or any(ours.word_ids(i) != theirs.word_ids(i) for i in range(len(texts))):
                return "auto"
        same = [(getattr(t, "is_fast", False), t.pad_token_id, t.unk_token, t.num_special_tokens_to_add())
                for t in (generic, tokenizer)]
        return "tokenizers" if same[0] == same[1] else "auto"
    except Exception:  # anything the generic tokenizer cannot do: the checkpoint's class is used instead
        return "auto"


def _new_entry_dir(entry: Path) -> Path | None:
    """A marked temporary directory to build `entry` in; None when `entry` is not this cache's or the cache is not
    writable (the export is then made for this call only)."""
    if entry.exists() and (read_marker(entry) or {}).get("kind") != KIND:
        return None
    try:
        return temp_dir_for(entry, KIND)
    except OSError:
        return None


def _write_entry(loaded: LoadedAdapter, backend: str, tmp: Path, key: str) -> str:
    """The graph for `backend`, the tokenizer and onnx_config.json into `tmp`; returns the graph's file name."""
    path, inputs = export_for_backend(loaded, backend, tmp)
    tokenizer = loaded.backbone.tokenizer
    tokenizer.save_pretrained(str(tmp))
    sizes = {f.name: f.stat().st_size for f in sorted(tmp.iterdir()) if f.is_file() and f.name != MARKER}
    write_json(tmp / CONFIG_FILE, {"format": FORMAT, "key": key, "model_file": path.name,
                                   "max_length": loaded.backbone.max_length, "inputs": inputs,
                                   "tokenizer": _tokenizer_loader(tokenizer, tmp),
                                   "tokenizer_inputs": list(tokenizer.model_input_names), "sizes": sizes})
    return path.name


def _bound(keep: Path) -> None:
    """Keep the newest ONNX_KEPT entries (by last use), `keep` among them, and remove the unfinished exports of
    processes of this machine that are gone. Only directories marked as this cache's are removed; one that cannot
    be removed is left."""
    root = keep.parent
    entries = []
    for child in root.iterdir():
        marker = read_marker(child) if child.is_dir() else None
        if marker is None or marker.get("kind") != KIND:
            continue
        if _LEFTOVER_NAME.match(child.name):
            if (marker.get("state") == BUILDING and marker.get("host") == socket.gethostname()
                    and marker.get("pid") != os.getpid() and not running_here(marker)):
                with contextlib.suppress(OSError, SlimtuneError):
                    remove_owned(child)
        elif _ENTRY_NAME.match(child.name) and child != keep:
            with contextlib.suppress(OSError):
                entries.append((child.stat().st_mtime_ns, child))
    for _, child in sorted(entries, reverse=True)[ONNX_KEPT - 1:]:
        with contextlib.suppress(OSError, SlimtuneError):
            remove_owned(child)
