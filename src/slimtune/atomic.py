"""Write-then-rename, so an interrupted save never leaves a half-written file behind.

The temporary file gets a unique name of its own (`.<name>.slimtune-tmp-<random>`), never a fixed one such as
`<name>.tmp` that could be a user's file.
"""

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _temp_path(final: Path) -> Path:
    """Unique and new (created with the usual permissions, unlike mkstemp's owner-only ones)."""
    return final.with_name(f".{final.name}.slimtune-tmp-{uuid.uuid4().hex[:12]}")


def _replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def _write(path: Path, write) -> None:
    path = Path(path)
    tmp = _temp_path(path)
    try:
        write(tmp)
        _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_safetensors(path: Path, tensors: dict[str, "torch.Tensor"], metadata: dict | None = None) -> None:
    from safetensors.torch import save_file  # here, so that writing JSON needs no torch

    _write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata))
