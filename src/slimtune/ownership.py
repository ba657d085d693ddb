"""What slimtune may delete, and how an output directory is committed as one unit.

Rule: slimtune deletes or replaces only directories it can prove it wrote. Every directory it creates as an output
(a run, a checkpoint, a pruned, quantized or merged model, a temporary directory) holds a marker file, `.slimtune`
(JSON: kind, run id, state, process), written first and removed last, so a directory without it is never slimtune's.

Commit: an output is built in a marked temporary directory beside its final place and swapped in with one
rename: onto a missing or empty directory `rename(2)`; onto a previous output, Linux's atomic
`renameat2(RENAME_EXCHANGE)`, after which the temporary name holds the old output, which is then renamed to a
trash name and removed (contents first, marker last). A kill -9 at any instant leaves the old output or the new
one in place, never a mix. Where the exchange is unsupported (another OS or file system) the swap is two renames;
a kill between them leaves the complete new output under its temporary name, which `recover` (run before an
output is next checked) renames into place. Leftover temporary and trash directories of a dead slimtune process
are recognised by their marker and removed by `clean_leftovers`; inside a marked directory every temporary name
is slimtune's, and those a kill left there are removed before the directory is committed.
"""

import ctypes
import ctypes.util
import errno
import glob
import json
import os
import shutil
import socket
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from slimtune.atomic import write_json
from slimtune.errors import SlimtuneError

MARKER = ".slimtune"
COMPLETE, BUILDING = "complete", "building"
_TMP, _TRASH, _WORK = ".slimtune-tmp-", ".slimtune-trash-", ".slimtune-work"


def read_marker(directory: Path) -> dict | None:
    """The marker of `directory`, or None when it has none (or one slimtune did not write)."""
    try:
        marker = json.loads((Path(directory) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def mark(directory: Path, kind: str, state: str = COMPLETE) -> dict:
    marker = {"kind": kind, "run_id": uuid.uuid4().hex, "state": state,
              "host": socket.gethostname(), "pid": os.getpid()}
    write_json(Path(directory) / MARKER, marker)
    return marker


def claim(directory: Path) -> None:
    """Record this process in the marker of a directory it takes over (an interrupted run it resumes)."""
    write_json(Path(directory) / MARKER, {**read_marker(directory), "host": socket.gethostname(), "pid": os.getpid()})


def running_here(marker: dict) -> bool:
    """Whether another live process on this machine wrote `marker` (so is likely still writing its directory)."""
    return (marker.get("host") == socket.gethostname() and marker.get("pid") != os.getpid()
            and _alive(marker))


def is_empty(directory: Path) -> bool:
    return not any(Path(directory).iterdir())


def check_out(out: Path, overwrite: bool, hint: str = "; pass --overwrite to replace it") -> bool:
    """Whether `out` holds a previous slimtune output (which only `overwrite` lets us replace).

    A missing or empty directory is fine; a file, or a directory holding anything slimtune did not write, is
    refused whatever the flags.
    """
    out = Path(out)
    writable = next(p for p in out.absolute().parents if p.exists())  # outputs are built beside `out`
    if not writable.is_dir():
        raise SlimtuneError(f"{out}: {writable} is a file, not a directory")
    if not os.access(writable, os.W_OK | os.X_OK):
        raise SlimtuneError(f"{out}: cannot write in {writable} (permission denied)")
    recover(out)
    if not out.exists():
        return False
    if not out.is_dir():
        raise SlimtuneError(f"{out} is a file, not a directory; choose another --out")
    if is_empty(out):
        return False
    if read_marker(out) is None:
        raise SlimtuneError(f"{out} holds files slimtune did not write; choose a new or empty directory")
    if not overwrite:
        raise SlimtuneError(f"{out} already holds a slimtune output{hint}")
    return True


def temp_dir_for(final: Path, kind: str) -> Path:
    """A new marked directory beside `final`, named `.<name>.slimtune-tmp-<random>`; commit it with `commit`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}{_TMP}"))
    mark(tmp, kind, BUILDING)
    return tmp


@contextmanager
def new_output(final: Path, kind: str, overwrite: bool = False):
    """Build an output (`with new_output(out, "merge") as tmp:` write into tmp) and commit it to `final`, which
    must be missing, empty or (with `overwrite`) a previous slimtune output, before and after; on any error the
    temporary directory is removed."""
    check_out(final, overwrite)
    tmp = temp_dir_for(final, kind)
    try:
        yield tmp
        check_out(final, overwrite)  # still free after the work
    except BaseException:
        remove_owned(tmp)
        raise
    commit(tmp, final)


def commit(tmp: Path, final: Path) -> None:
    """Swap the fully written marked directory `tmp` into `final` in one step; a previous output there
    (which the caller has checked is slimtune's) is removed afterwards."""
    tmp, final = Path(tmp), Path(final)
    _remove_temporaries(tmp)
    empty = not final.exists() or (final.is_dir() and is_empty(final))
    previous = None if empty else read_marker(final)
    write_json(tmp / MARKER, {**read_marker(tmp), "state": COMPLETE, "replaces": previous and previous["run_id"]})
    _fsync_dir(tmp)
    if empty:
        os.replace(tmp, final)
    elif _exchange(tmp, final):
        remove_owned(_to_trash(tmp, final))
    else:
        trash = _to_trash(final, final)
        os.replace(tmp, final)
        remove_owned(trash)
    _fsync_dir(final.parent)


def work_dir_for(final: Path) -> Path:
    """The fixed place beside `final` where a resumable output (a training run) is built."""
    return Path(final).with_name(f".{Path(final).name}{_WORK}")


def final_name(directory: Path) -> str:
    """The name a run directory will have once committed: "run" for both "run" and its work dir ".run.slimtune-work"."""
    name = Path(directory).name
    if name.startswith(".") and name.endswith(_WORK):
        return name[1:-len(_WORK)]
    return name


def recover(final: Path) -> None:
    """Finish a commit that a kill interrupted, or drop the old output an exchange already swapped out.

    A complete staged directory beside `final` that `replaces` what is at `final` (or with nothing there) is the
    new output whose swap never happened; one that `final` replaces is the previous output, swapped out.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return
    name = glob.escape(final.name)
    staged = [*final.parent.glob(f".{name}{_TMP}*"), *final.parent.glob(f".{name}{_WORK}")]
    for candidate in staged:
        marker = read_marker(candidate)
        if not candidate.is_dir() or (marker or {}).get("state") != COMPLETE:
            continue
        current = read_marker(final) if final.is_dir() and not is_empty(final) else None
        if not final.exists() or (final.is_dir() and is_empty(final)):
            os.replace(candidate, final)
        elif current and marker.get("replaces") == current["run_id"]:
            commit(candidate, final)
        elif current and current.get("replaces") == marker["run_id"]:
            remove_owned(candidate)


def clean_leftovers(final: Path) -> None:
    """Remove this output's temporary and trash directories that a killed slimtune process left behind."""
    final = Path(final)
    if not final.parent.is_dir():
        return
    recover(final)
    name = glob.escape(final.name)
    for pattern in (f".{name}{_TMP}*", f".{name}{_TRASH}*"):
        for leftover in final.parent.glob(pattern):
            marker = read_marker(leftover)
            if leftover.is_dir() and marker and not _alive(marker):
                remove_owned(leftover)
            elif leftover.is_dir() and marker is None and is_empty(leftover):
                leftover.rmdir()  # a removal killed after its marker went


def remove_owned(directory: Path) -> None:
    """Delete a directory slimtune wrote, its marker last, so a kill part-way leaves it still recognisable."""
    directory = Path(directory)
    if read_marker(directory) is None:
        raise SlimtuneError(f"{directory} holds files slimtune did not write; refusing to delete it")
    for child in directory.iterdir():
        if child.name == MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (directory / MARKER).unlink()
    directory.rmdir()


def _remove_temporaries(directory: Path) -> None:
    """Inside a marked directory everything is slimtune's: drop the temporaries a killed process left there
    (a half-written file's `.NAME.slimtune-tmp-*`, an unfinished checkpoint directory) before committing it."""
    for child in directory.iterdir():
        if _TMP in child.name or _TRASH in child.name:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _to_trash(directory: Path, final: Path) -> Path:
    trash = directory.with_name(f".{final.name}{_TRASH}{uuid.uuid4().hex[:12]}")
    os.replace(directory, trash)
    return trash


def _alive(marker: dict) -> bool:
    """Whether the process that wrote `marker` may still be using its directory."""
    if marker.get("host") != socket.gethostname() or not isinstance(marker.get("pid"), int):
        return True  # another machine's (a shared file system): leave it
    if marker["pid"] == os.getpid():
        return False
    try:
        os.kill(marker["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not supported here
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))
