"""Progress off a terminal: plain periodic lines with count, rate and ETA."""

import io

from slimtune.progress import PlainProgress


def test_plain_lines_carry_count_rate_eta_and_postfix(monkeypatch):
    clock = iter([0.0, 6.0, 7.0, 40.0, 41.0])
    monkeypatch.setattr("slimtune.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = PlainProgress(total=10, desc="train", file=out, every_seconds=30)  # t=0
    bar.set_postfix(loss="0.5")
    bar.update(3)  # t=6: first line, so a run shows its ETA early
    bar.update(1)  # t=7: too soon for another
    bar.update(4)  # t=40: 30 s after the last line
    bar.close()  # t=41: the final count
    lines = out.getvalue().splitlines()
    assert lines[0] == "train: 3/10 batch (30.0%), 0.5 batch/s, elapsed 0:06, ETA 0:14, loss=0.5"
    assert lines[1].startswith("train: 8/10 batch (80.0%)") and "ETA 0:10" in lines[1]
    assert lines[2].startswith("train: 8/10") and len(lines) == 3


def test_training_off_a_terminal_prints_progress_lines(tiny_model, toy_data, tmp_path, capfd, monkeypatch):
    from slimtune.cli import main

    monkeypatch.setenv("SLIMTUNE_PROGRESS_SECONDS", "0")
    assert main(["train", "--method", "lora", "--train", toy_data["train"], "--dev", toy_data["dev"],
                 "--model", tiny_model, "--epochs", "1", "--batch-size", "8", "--few-shot", "supervised",
                 "--out", str(tmp_path / "r")]) == 0
    err = capfd.readouterr().err
    assert "train: " in err and " batch/s" in err and "loss=" in err


def test_the_pair_phase_off_a_terminal_prints_progress_lines(tiny_model, toy_data, tmp_path, capfd, monkeypatch):
    from slimtune.cli import main

    monkeypatch.setenv("SLIMTUNE_PROGRESS_SECONDS", "0")
    assert main(["train", "--train", toy_data["train"], "--model", tiny_model, "--few-shot", "contrastive",
                 "--pairs-per-row", "2", "--out", str(tmp_path / "r")]) == 0
    err = capfd.readouterr().err
    assert "pairs: " in err and " batch/s" in err and "loss=" in err
