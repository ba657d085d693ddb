"""Opening data files: plain or gzip-compressed, with errors that name the path."""

import gzip
import io
from pathlib import Path

from slimtune.errors import SlimtuneError


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a UTF-8 text file, transparently decompressing `.gz`."""
    path = Path(path)
    if not path.exists():
        raise SlimtuneError(f"{path}: no such file")
    if path.is_dir():
        raise SlimtuneError(f"{path}: is a directory, expected a data file")
    if path.stat().st_size == 0:
        raise SlimtuneError(f"{path}: file is empty")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def data_format(path: str | Path) -> str:
    """The format named by the file's extension, ignoring a trailing `.gz`."""
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    return {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(ext, "")
