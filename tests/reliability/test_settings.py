"""Nonsense settings are refused at parse time, before any model is loaded or file written."""

import pytest

from tests.reliability.conftest import train_args


@pytest.mark.parametrize("extra, words", [
    (["--set", "alpha=nan"], "finite"),
    (["--set", "alpha=inf"], "finite"),
    (["--set", "dropout=-inf"], "finite"),
    (["--lr", "inf"], "finite"),
    (["--lr", "nan"], "finite"),
    (["--lr", "0"], "--lr"),
    (["--lr=-1e-3"], "--lr"),
    (["--grad-clip", "-1"], "--grad-clip"),
    (["--grad-clip", "0"], "--grad-clip"),
    (["--eval-every", "-5"], "--eval-every"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-8"], "--batch-size"),
    (["--epochs", "0"], "--epochs"),
    (["--max-train-examples", "0"], "--max-train-examples"),
    (["--max-train-examples", "-3"], "--max-train-examples"),
    (["--max-length", "0"], "--max-length"),
    (["--max-length", "-1"], "--max-length"),
    (["--warmup-ratio", "1.5"], "--warmup-ratio"),
    (["--weight-decay", "nan"], "finite"),
    (["--set", "r=0"], "rank"),
])
def test_train_refuses_nonsense_settings(refuses, tiny_model, toy_files, tmp_path, extra, words):
    out = tmp_path / "out"
    line = refuses(train_args(tiny_model, toy_files["train"], out, *extra), out=out)
    assert words in line
    assert not out.exists()


@pytest.mark.parametrize("argv", [
    ["eval", "--adapter", "{run}", "--data", "{dev}", "--batch-size", "0"],
    ["predict", "--adapter", "{run}", "--batch-size", "-1", "good"],
    ["generate", "--max-new-tokens", "0", "hi"],
    ["generate", "--temperature", "nan", "hi"],
])
def test_other_commands_refuse_nonsense_numbers(refuses, trained_run, toy_files, argv):
    refuses([a.format(run=trained_run, dev=toy_files["dev"]) for a in argv])


def test_single_class_training_set_is_refused(refuses, tiny_model, tmp_path):
    from tests.conftest import write_tsv

    train = write_tsv(tmp_path / "one.tsv", [("good film", "pos"), ("great plot", "pos"), ("fun", "pos")] * 4)
    out = tmp_path / "out"
    assert "at least two labels" in refuses(train_args(tiny_model, train, out), out=out)
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "merge", "quantize"])
def test_out_onto_a_file_is_refused(refuses, tiny_model, toy_files, trained_run, tmp_path, command):
    out = tmp_path / "taken.txt"
    out.write_text("the user's file")
    argv = {"train": train_args(tiny_model, toy_files["train"], out),
            "merge": ["merge", "--adapter", trained_run, "--out", out],
            "quantize": ["quantize", "--adapter", trained_run, "--out", out]}[command]
    assert "not a directory" in refuses(argv, out=out)


def test_out_inside_an_unwritable_directory_is_refused(refuses, tiny_model, toy_files, tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert "not writable" in refuses(train_args(tiny_model, toy_files["train"], locked / "run"), out=locked)
    finally:
        locked.chmod(0o700)


def test_out_below_a_file_is_refused(refuses, tiny_model, toy_files, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    assert "is not a directory" in refuses(train_args(tiny_model, toy_files["train"], blocker / "run"), out=blocker)
