"""Opening data files: plain or gzip-compressed, with errors that name the path.

A file is read and checked whole before any reader parses it: it must be a
readable file, a complete gzip stream when it ends in `.gz`, at most
MAX_TEXT_BYTES of text once decompressed, UTF-8, and text (no NUL bytes), so
every reader refuses broken, oversized or binary input with one line instead
of failing somewhere inside a parser.
"""

import gzip
import io
import json
import stat
import zlib
from pathlib import Path

from slimtune.errors import SlimtuneError

GZIP_MAGIC = b"\x1f\x8b"
MAX_TEXT_BYTES = 1 << 30  # a data file's text, decompressed; files are read whole: more (a gzip bomb) exhausts memory


def read_text(path: str | Path) -> str:
    """The whole UTF-8 text of a data file, transparently decompressing `.gz`."""
    path = Path(path)
    if not path.exists():
        raise SlimtuneError(f"{path}: no such file")
    if path.is_dir():
        raise SlimtuneError(f"{path}: is a directory, expected a data file")
    refuse_devices(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TEXT_BYTES + 1)
    except OSError as e:
        raise SlimtuneError(f"{path}: cannot read ({e.strerror})") from None
    if not data:
        raise SlimtuneError(f"{path}: file is empty")
    if path.suffix == ".gz":
        if not data.startswith(GZIP_MAGIC):
            raise SlimtuneError(f"{path}: not a gzip file (it ends in .gz)")
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:  # every member, stopped past the bound
                data = stream.read(MAX_TEXT_BYTES + 1)
        except (EOFError, OSError, zlib.error) as e:
            raise SlimtuneError(f"{path}: broken or truncated gzip data ({e})") from None
        if not data:
            raise SlimtuneError(f"{path}: file is empty")
    if len(data) > MAX_TEXT_BYTES:
        unpacked = " once decompressed" if path.suffix == ".gz" else ""
        raise SlimtuneError(f"{path}: more than {MAX_TEXT_BYTES:,} bytes of text{unpacked}; data files are read "
                            "whole, so split or sample it first")
    text = _decode(data, path)
    nul = text.find("\0")
    if nul >= 0:
        raise SlimtuneError(f"{path}: binary data, not text (NUL character at offset {nul})")
    return text.removeprefix("\ufeff")  # a byte-order mark some editors write


def _decode(data: bytes, path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SlimtuneError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def open_text(path: str | Path) -> io.TextIOBase:
    """A UTF-8 text file (`.gz` decompressed) as a text stream, checked whole first (see `read_text`)."""
    return io.StringIO(read_text(path), newline="")


def parse_json(text: str, where) -> object:
    """One JSON value; invalid or absurdly nested JSON is an error naming `where` (file or file:line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SlimtuneError(f"{where}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise SlimtuneError(f"{where}: JSON nested too deeply") from None


def refuse_devices(path: Path) -> None:
    """A device or socket is never a data file: /dev/zero or /dev/urandom would be read until memory runs out.
    Pipes stay allowed, so `--train <(zcat rows.tsv.gz)` works."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # the read that follows says why
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        raise SlimtuneError(f"{path}: is a device or socket, expected a file")


def read_json_file(path: str | Path, max_bytes: int | None = None) -> object:
    """One JSON value from a UTF-8 file (a configuration), at most `max_bytes` long; errors name the path."""
    path = Path(path)
    refuse_devices(path)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise SlimtuneError(f"{path}: {size:,} bytes, too large for what it should hold")
        data = path.read_bytes()
    except OSError as e:
        raise SlimtuneError(f"{path}: cannot read ({e.strerror})") from None
    return parse_json(_decode(data, path), path)


def data_format(path: str | Path) -> str:
    """The format named by the file's extension, ignoring a trailing `.gz`."""
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    return {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(ext, "")
