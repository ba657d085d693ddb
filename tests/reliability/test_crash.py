"""kill -9 a real `slimtune train` process during steps, checkpoint writes and the final save, then run again.

Each run is a child process forked from the test (torch and transformers already imported: a fresh interpreter
takes 10+ s to start on the shared machine) running `slimtune.cli.main`, killed with SIGKILL at a chosen call
(patched in the child only) or after a seeded random delay. Afterwards `--out` must hold nothing, the previous
run, or the new one, each complete; and `--resume` (or, with no checkpoint to continue, `--overwrite`) must
give the uninterrupted run's adapter bit for bit, leaving no temporary files behind.
For a longer soak: CRASH_ATTEMPTS=50 CRASH_SEED=1 pytest tests/reliability/test_crash.py -k random
"""

import importlib
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slimtune.cli import main
from tests.conftest import sentiment_rows, write_tsv

CHILD_SECONDS = 300  # a forked training run of the tiny model takes a few seconds
RUN_FILES = {".slimtune", "adapter.safetensors", "adapter_config.json", "metrics.json", "metrics.jsonl",
             "train_config.json", "train_config.yaml", "checkpoint"}


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    data = {"train": write_tsv(root / "train.tsv", sentiment_rows(64, 0)),
            "dev": write_tsv(root / "dev.tsv", sentiment_rows(16, 1))}
    argv = lambda out, seed: ["train", "--task", "classify", "--method", "lora", "--model", tiny_model,
                              "--train", data["train"], "--dev", data["dev"], "--out", str(out), "--epochs", "2",
                              "--batch-size", "8", "--set", "r=4", "--set", "dropout=0.1", "--seed", str(seed),
                              "--checkpoint-every", "3", "--few-shot", "supervised"]  # checkpoints: not contrastive
    references = {}
    for seed in (1, 3):  # 16 steps: checkpoints at 3, 6, 8 (epoch end), 9, 12, 15, 16
        out = root / f"reference-{seed}"
        started = time.perf_counter()
        assert main(argv(out, seed)) == 0
        references[seed] = {"run": _snapshot(out), "seconds": time.perf_counter() - started}
    return {"root": root, "argv": argv, "references": references}


def _snapshot(run: Path) -> dict:
    """What must match between two runs: the adapter's tensors and the configs."""
    return {"adapter": load_file(run / "adapter.safetensors"),
            "config": json.loads((run / "adapter_config.json").read_text()),
            "train_config": json.loads((run / "train_config.json").read_text())}


def _same(a: dict, b: dict) -> bool:
    return (a["config"] == b["config"] and a["train_config"]["seed"] == b["train_config"]["seed"]
            and a["adapter"].keys() == b["adapter"].keys()
            and all(torch.equal(a["adapter"][k], b["adapter"][k]) for k in a["adapter"]))


def _kill_on_call(target: str, call: int, after: bool = False, when=lambda *args: True):
    """In the child: SIGKILL this process at the `call`-th call of `module:attribute` whose arguments pass `when`
    (before the call, or after it)."""
    module_name, _, attribute = target.partition(":")
    owner_name, _, method = attribute.partition(".")
    owner = getattr(importlib.import_module(module_name), owner_name) if method else importlib.import_module(module_name)
    name = method or attribute
    original, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        if when(*args):
            calls.append(1)
        if len(calls) == call and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if len(calls) == call and after:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)
        return result

    setattr(owner, name, wrapper)


def _run_child(argv, kill=None, delay=None, no_exchange=False) -> int:
    """Run `slimtune` in a forked child; returns its exit code, or -9 when it was killed."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            if no_exchange:
                import slimtune.ownership

                slimtune.ownership._exchange = lambda a, b: False
            if kill:
                _kill_on_call(*kill)
            code = main(argv)
        finally:
            os._exit(code)
    if delay is not None:
        time.sleep(delay)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + CHILD_SECONDS  # a child stuck (a lock held at fork time) fails, never hangs CI
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"slimtune {' '.join(argv[:3])} ... still running after {CHILD_SECONDS} s")
        time.sleep(0.02)
    status = waited[1]
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _out_is_whole(out: Path, allowed: list[dict]) -> None:
    """`out` holds nothing, or exactly one of the `allowed` runs, complete."""
    if not out.exists() or not any(out.iterdir()):
        return
    names = {p.name for p in out.iterdir()}
    assert names == RUN_FILES, names
    assert any(_same(_snapshot(out), run) for run in allowed), "a mix of two runs"


def _finish(setup, out: Path, seed: int, no_exchange=False) -> None:
    """Run again to the end: --resume where there is a checkpoint of this run to continue, else --overwrite."""
    code = _run_child(setup["argv"](out, seed) + ["--resume"], no_exchange=no_exchange)
    if code == 2:  # nothing of this run to resume (or the previous run's settings)
        code = _run_child(setup["argv"](out, seed) + ["--overwrite"], no_exchange=no_exchange)
    assert code == 0
    assert _same(_snapshot(out), setup["references"][seed]["run"])
    assert {p.name for p in out.parent.iterdir()} == {out.name}, "temporary files left beside --out"
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert {p.name for p in (out / "checkpoint").iterdir()} == {
        ".slimtune", "trainable.safetensors", "best.safetensors", "state.safetensors", "state.json",
        "settings.json", "progress.json"}


def _of(name: str):
    """Calls of `_to_trash(directory, final)` that swap out what stood at `final` named `name`."""
    return lambda directory, final: final.name == name


KILL_POINTS = {  # (function, its n-th call, after it?, which calls count): 16 steps, checkpoints at 3, 6, 8, ...
    "before the first checkpoint": ("slimtune.training.trainer:Trainer._backward", 2),
    "during steps": ("slimtune.training.trainer:Trainer._backward", 11),
    "mid checkpoint files": ("slimtune.training.checkpoint:write_json", 5),
    "mid checkpoint swap": ("slimtune.ownership:_to_trash", 1, False, _of("checkpoint")),
    "between adapter and config": ("slimtune.runs.adapter_files:write_json", 1),
    "before the commit": ("slimtune.runs.train:commit_run", 1),
    "right after the swap": ("slimtune.ownership:_to_trash", 1, False, _of("x")),  # only over a previous run
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
@pytest.mark.parametrize("previous", [False, True], ids=["new", "over-previous"])
def test_a_killed_run_leaves_a_whole_run_and_resumes_to_the_same_adapter(setup, tmp_path, point, previous):
    if point == "right after the swap" and not previous:
        pytest.skip("onto a new --out the commit is one rename, with no 'after'")
    out = tmp_path / "runs" / "x"
    allowed = [setup["references"][3]["run"]]
    if previous:  # a finished run with other settings, which --overwrite is replacing
        assert _run_child(setup["argv"](out, 1)) == 0
        allowed.append(setup["references"][1]["run"])
    flags = ["--overwrite"] if previous else []
    assert _run_child(setup["argv"](out, 3) + flags, kill=KILL_POINTS[point]) == -signal.SIGKILL
    _out_is_whole(out, allowed)
    if previous:  # the previous run stays whole until the new one is: then the swap is one step
        expected = 3 if point == "right after the swap" else 1
        assert _same(_snapshot(out), setup["references"][expected]["run"])
    _finish(setup, out, 3)


@pytest.mark.parametrize("after", [False, True], ids=["before-second-rename", "after-first-rename"])
def test_without_an_atomic_exchange_a_killed_commit_is_finished_by_the_next_command(setup, tmp_path, after):
    """Where renameat2 cannot swap, a commit is two renames; a kill between them is repaired on the next start."""
    out = tmp_path / "runs" / "x"
    assert _run_child(setup["argv"](out, 1)) == 0
    kill = ("slimtune.ownership:_to_trash", 1, after, _of("x"))  # the final commit's: the previous run away
    assert _run_child(setup["argv"](out, 3) + ["--overwrite"], kill=kill, no_exchange=True) == -signal.SIGKILL
    _finish(setup, out, 3, no_exchange=True)


def test_kills_at_random_instants(setup, tmp_path):
    rng = random.Random(int(os.environ.get("CRASH_SEED", 0)))
    seconds = setup["references"][3]["seconds"]
    for attempt in range(int(os.environ.get("CRASH_ATTEMPTS", 4))):
        out = tmp_path / f"attempt-{attempt}" / "x"
        _run_child(setup["argv"](out, 3), delay=rng.uniform(0, 1.2 * seconds))
        _out_is_whole(out, [setup["references"][3]["run"]])
        _finish(setup, out, 3)
