"""`--out` of every writing command: what is not slimtune's is refused and left alone, siblings included."""

import json
import os

import pytest

from slimtune.cli import main
from slimtune.ownership import MARKER
from tests.conftest import sentiment_rows, write_tsv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("out-dirs")
    return {"train": write_tsv(root / "train.tsv", sentiment_rows(32, 0)),
            "dev": write_tsv(root / "dev.tsv", sentiment_rows(8, 1))}


@pytest.fixture(scope="module")
def run(tiny_model, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(_train(tiny_model, data, out)) == 0
    return out


def _train(tiny_model, data, out, *flags) -> list[str]:
    return ["train", "--method", "lora", "--model", tiny_model, "--train", data["train"], "--dev", data["dev"],
            "--out", str(out), "--epochs", "1", "--batch-size", "8", "--set", "r=2", "--few-shot", "off", *flags]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _users_files(directory):
    """A directory of the user's that looks like an old slimtune run: the names the old code deleted."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint", "checkpoint.old", "checkpoint.tmp"):
        (directory / name).mkdir()
        (directory / name / "thesis.tex").write_text("years of work")
    (directory / "notes.txt").write_text("keep me")
    return _listing(directory)


def _listing(directory) -> dict:
    return {str(p.relative_to(directory)): p.read_text() if p.is_file() else None for p in directory.rglob("*")}


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"], ["--overwrite", "--resume"]])
def test_train_refuses_an_out_holding_the_users_files(tiny_model, data, tmp_path, capsys, flags):
    before = _users_files(tmp_path / "mine")
    assert "holds files slimtune did not write" in _error(capsys, _train(tiny_model, data, tmp_path / "mine", *flags))
    assert _listing(tmp_path / "mine") == before
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_train_into_an_empty_directory_marks_it_as_a_run(tiny_model, data, tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(_train(tiny_model, data, tmp_path / "empty")) == 0
    marker = json.loads((tmp_path / "empty" / MARKER).read_text())
    assert marker["kind"] == "run" and marker["state"] == "complete" and len(marker["run_id"]) == 32
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


def test_an_interrupted_run_is_neither_lost_nor_silently_restarted(tiny_model, data, tmp_path, capsys):
    from slimtune.ownership import work_dir_for
    from slimtune.runs.train import TrainRequest, train
    from slimtune.runs.run_commit import interrupted
    from slimtune.training.config import TrainConfig
    from tests.conftest import Interrupt, interrupt_at

    out = tmp_path / "run"
    request = TrainRequest(task="classify", method="lora", train_path=data["train"], dev_path=data["dev"],
                           out_dir=str(out), model=tiny_model, options={"r": "2"}, few_shot="off",
                           config=TrainConfig(epochs=1, batch_size=8, checkpoint_every=1))
    with pytest.raises(Interrupt):
        train(request, step_callbacks=[interrupt_at(2)])
    assert interrupted(work_dir_for(out)) and not out.exists()
    capsys.readouterr()
    assert "an interrupted run waits in" in _error(capsys, _train(tiny_model, data, out, "--checkpoint-every", "1"))
    marker = json.loads((work_dir_for(out) / MARKER).read_text())
    (work_dir_for(out) / MARKER).write_text(json.dumps({**marker, "pid": os.getppid()}))  # as if still running
    for flags in (["--overwrite"], ["--resume"]):
        assert f"another slimtune process (pid {os.getppid()}) is training into it" in _error(
            capsys, _train(tiny_model, data, out, "--checkpoint-every", "1", *flags))
    (work_dir_for(out) / MARKER).write_text(json.dumps(marker))
    assert main(_train(tiny_model, data, out, "--overwrite")) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.parametrize("command", ["prune", "quantize", "merge"])
def test_outputs_leave_the_users_siblings_alone_and_refuse_the_users_out(tiny_model, run, tmp_path, capsys,
                                                                         command):
    out = tmp_path / "x"
    siblings = {name: _users_files(tmp_path / name) for name in ("x.old", "x.tmp")}
    argv = {"prune": ["prune", "--model", tiny_model, "--method", "magnitude", "--sparsity", "0.2"],
            "quantize": ["quantize", "--adapter", str(run)],
            "merge": ["merge", "--adapter", str(run)]}[command]
    assert main([*argv, "--out", str(out)]) == 0
    capsys.readouterr()
    assert json.loads((out / MARKER).read_text())["kind"] == command
    assert {name: _listing(tmp_path / name) for name in siblings} == siblings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "x.old", "x.tmp"]
    assert "already holds a slimtune output; pass --overwrite" in _error(capsys, [*argv, "--out", str(out)])
    first = json.loads((out / MARKER).read_text())["run_id"]
    assert main([*argv, "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / MARKER).read_text())["run_id"] != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "x.old", "x.tmp"]
    capsys.readouterr()
    mine = _users_files(tmp_path / "mine")
    for flags in ([], ["--overwrite"]):
        assert "holds files slimtune did not write" in _error(capsys, [*argv, "--out", str(tmp_path / "mine"), *flags])
    assert _listing(tmp_path / "mine") == mine


@pytest.mark.skipif(not os.path.isdir("/proc/self"),
                    reason="needs Linux's /proc, where mkdir fails though access() allows it")
@pytest.mark.parametrize("command", ["train", "merge", "export"])
def test_an_out_the_system_refuses_to_create_is_one_line(tiny_model, data, run, capsys, command):
    """The access check before work cannot foresee every file system; what the system then refuses is one line."""
    out = "/proc/slimtune-test-out"
    argv = {"train": _train(tiny_model, data, out),
            "merge": ["merge", "--adapter", str(run), "--out", out],
            "export": ["export", "--adapter", str(run), "--format", "peft", "--out", out]}[command]
    assert "No such file or directory" in _error(capsys, argv)
    assert not [name for name in os.listdir("/proc") if "slimtune" in name]
