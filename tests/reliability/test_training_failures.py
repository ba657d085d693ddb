"""What goes wrong during or between runs: non-finite loss or gradient, damaged or foreign checkpoints, torn logs."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from slimtune.cli import main
from slimtune.tasks.classify import ClassificationTask
from slimtune.ownership import work_dir_for
from slimtune.training.checkpoint import has_checkpoint
from tests.reliability.conftest import train_args


class NanGradient(torch.autograd.Function):
    """The identity forward; NaN gradients backward (a finite loss whose gradient is not)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _break_loss_from(monkeypatch, call: int, how: str):
    """Make the classify loss go bad from its `call`-th use: a NaN loss, or a NaN gradient."""
    calls = {"n": 0}

    def loss(self, logits, labels):
        calls["n"] += 1
        if calls["n"] >= call:
            if how == "loss":
                return F.cross_entropy(logits, labels) * float("nan")
            return F.cross_entropy(NanGradient.apply(logits), labels)
        return F.cross_entropy(logits, labels)

    monkeypatch.setattr(ClassificationTask, "loss", loss)


@pytest.mark.parametrize("how, words", [("loss", "the loss is nan"), ("gradient", "gradient norm is nan")])
def test_non_finite_training_stops_and_keeps_the_last_good_checkpoint(refuses, monkeypatch, tiny_model, toy_files,
                                                                     tmp_path, how, words):
    out = tmp_path / "run"
    args = train_args(tiny_model, toy_files["train"], out, "--dev", toy_files["dev"], "--checkpoint-every", "2")
    _break_loss_from(monkeypatch, 4, how)
    line = refuses(args)
    assert words in line and "step 4" in line and "is kept" in line
    # an interrupted run waits for --resume in its work directory beside --out (runs/run_commit.py)
    assert has_checkpoint(work_dir_for(out) / "checkpoint") and not (out / "adapter.safetensors").exists()
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0  # the kept checkpoint is a good one: the run continues from it
    assert (out / "adapter.safetensors").exists()


@pytest.fixture
def finished_run(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def _resume_args(tiny_model, toy_files, out, method="lora"):
    args = train_args(tiny_model, toy_files["train"], out, "--dev", toy_files["dev"], "--resume")
    return [method if i and args[i - 1] == "--method" else a for i, a in enumerate(args)]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_is_refused_on_resume(refuses, finished_run, tiny_model, toy_files, damage):
    files = [p for p in (finished_run / "checkpoint").iterdir() if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\xffnot a checkpoint",
                          "empty": b""}[damage])
    line = refuses(_resume_args(tiny_model, toy_files, finished_run), out=finished_run)
    assert "cannot resume" in line or "no checkpoint to resume from" in line


def test_resume_with_another_method_is_refused(refuses, finished_run, tiny_model, toy_files):
    args = [a for a in _resume_args(tiny_model, toy_files, finished_run, method="bitfit") if a != "r=2"]
    args.remove("--set")
    line = refuses(args, out=finished_run)
    assert "other settings than the checkpoint's" in line and '"bitfit" now' in line


def test_torn_last_metrics_line_is_tolerated_on_resume(finished_run, tiny_model, toy_files):
    log = finished_run / "metrics.jsonl"
    whole = log.read_text()
    log.write_text(whole + '{"type": "train", "st')
    assert main(_resume_args(tiny_model, toy_files, finished_run)) == 0
    assert log.read_text() == whole
