"""Write-then-rename, so an interrupted save never leaves a half-written file behind."""

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file


def _replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    _replace(tmp, path)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    _replace(tmp, path)


def write_torch(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    _replace(tmp, path)


def replace_directory(tmp_dir: Path, final_dir: Path) -> None:
    """Swap a fully written directory into place; the old one is removed only afterwards."""
    old = final_dir.with_name(final_dir.name + ".old")
    if final_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    shutil.rmtree(old, ignore_errors=True)
