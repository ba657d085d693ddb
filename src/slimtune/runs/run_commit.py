"""Where a training run is built and how it replaces `--out` (the rules in slimtune.ownership).

A run is trained in `.<out>.slimtune-work/` beside `--out` (checkpoints, metrics.jsonl), its final files are
written there too, and the whole directory is then committed into `--out` in one step: `--out` holds the
previous run, untouched, until the new one is complete. An interrupted run stays in the work directory (marked
"building") for `--resume`; a later run without `--resume` must say `--overwrite` to discard it.
"""

import hashlib
import shutil
from pathlib import Path

from slimtune.errors import SlimtuneError
from slimtune.ownership import (BUILDING, check_out, claim, clean_leftovers, commit, is_empty, mark, read_marker,
                                recover, remove_owned, running_here, work_dir_for)
from slimtune.training.checkpoint import check_settings, has_checkpoint

CHECKPOINT = "checkpoint"
LOG = "metrics.jsonl"


def interrupted(work: Path) -> bool:
    """Whether `work` holds a run that was stopped before it was committed, with a checkpoint to resume."""
    return (read_marker(work) or {}).get("state") == BUILDING and has_checkpoint(work / CHECKPOINT)


def check_run_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, an --out (or work directory) this run may not use."""
    out = Path(out)
    work = work_dir_for(out)
    recover(out)
    if work.exists() and not (work.is_dir() and (is_empty(work) or read_marker(work))):
        raise SlimtuneError(f"{work} holds files slimtune did not write; move it away or choose another --out")
    marker = read_marker(work) or {}
    if marker.get("state") == BUILDING and running_here(marker):
        raise SlimtuneError(f"{out}: another slimtune process (pid {marker['pid']}) is training into it")
    if resume:
        check_out(out, overwrite=True)  # resuming replaces the run it continues, and only a slimtune run
        if not interrupted(work) and not (read_marker(out) and has_checkpoint(out / CHECKPOINT)):
            raise SlimtuneError(f"{out}: no checkpoint to resume from")
        return
    check_out(out, overwrite, hint="; pass --overwrite to replace it or --resume to continue it")
    if interrupted(work) and not overwrite:
        raise SlimtuneError(f"{out}: an interrupted run waits in {work}; pass --resume to continue it "
                            "or --overwrite to start again")


def open_work_dir(out: Path, resume: bool, settings: dict) -> Path:
    """The marked directory this run trains in (after `check_run_out`): the interrupted one when resuming it,
    else a new one, holding a copy of the committed run's checkpoint and log when resuming that.

    A resume whose `settings` differ from those its checkpoint records is refused before anything is written.
    """
    out = Path(out)
    work = work_dir_for(out)
    clean_leftovers(out)
    if resume:
        check_settings((work if interrupted(work) else out) / CHECKPOINT, settings)
    if resume and interrupted(work):
        claim(work)
        return work
    if work.exists():
        remove_owned(work) if read_marker(work) else work.rmdir()
    try:  # the access check before training cannot foresee every file system (/proc, a read-only mount)
        work.parent.mkdir(parents=True, exist_ok=True)
        work.mkdir()
    except OSError as e:
        raise SlimtuneError(f"--out {out}: cannot create a directory beside it ({e.strerror or e})") from None
    mark(work, "run", BUILDING)
    if resume:
        shutil.copytree(out / CHECKPOINT, work / CHECKPOINT)
        if (out / LOG).exists():
            shutil.copy2(out / LOG, work / LOG)
    return work


def commit_run(work: Path, out: Path) -> None:
    """Make the finished run in `work` the content of `out`, replacing only a previous slimtune run."""
    check_out(out, overwrite=True)
    commit(work, out)


def data_identity(path: str | None) -> dict | None:
    """Size and SHA-256 of a data file: what a resumed run's data must match (its path may differ)."""
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def config_settings(config) -> dict:
    """The training settings that change the result (how often checkpoints are written does not)."""
    return {k: v for k, v in vars(config).items() if k != "checkpoint_every"}
