"""`slimtune tune` on the tiny model: a real Optuna study over real training runs."""

import json

import optuna
import pytest
import yaml

from slimtune.cli import main
from tests.conftest import sentiment_rows, write_tsv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune-data")
    return {"train": write_tsv(root / "train.tsv", sentiment_rows(96, 0)),
            "dev": write_tsv(root / "dev.tsv", sentiment_rows(24, 1))}


def tune_args(data, model, out, trials):
    return ["tune", "--method", "lora", "--train", data["train"], "--dev", data["dev"], "--model", model,
            "--out", str(out), "--trials", str(trials), "--max-epochs", "2", "--evals-per-epoch", "3"]


@pytest.fixture(scope="module")
def study_dir(data, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "study"
    assert main(tune_args(data, tiny_model, out, 6)) == 0
    return out


def load_study(out):
    return optuna.load_study(study_name="slimtune", storage=f"sqlite:///{out / 'study.db'}")


def test_tune_writes_best_config_adapter_and_report(study_dir):
    report = json.loads((study_dir / "report.json").read_text())
    assert report["trials_finished"] == 6
    best = report["best"]
    assert best["value"] == max(t["value"] for t in report["trials"] if t["state"] == "complete")
    assert (study_dir / "best" / "adapter.safetensors").is_file()
    assert json.loads((study_dir / "best.json").read_text())["trial"] == best["trial"]
    html = (study_dir / "report.html").read_text()
    assert "Optimisation history" in html and "data:image/png;base64," in html
    assert not list((study_dir / "trials").iterdir())  # only the best run is kept


def test_poor_trials_are_pruned(study_dir):
    states = [t.state for t in load_study(study_dir).trials]
    assert optuna.trial.TrialState.PRUNED in states


def test_best_yaml_reproduces_the_best_trial(study_dir, tmp_path):
    report = json.loads((study_dir / "report.json").read_text())
    flags = yaml.safe_load((study_dir / "best.yaml").read_text())
    assert flags["method"] == "lora" and flags["lr"] == report["best"]["params"]["lr"]
    assert main(["train", "--config", str(study_dir / "best.yaml"), "--out", str(tmp_path / "again")]) == 0
    metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert metrics["best_dev_accuracy"] == report["best"]["value"]


def test_rerunning_continues_the_study(data, tiny_model, tmp_path, capsys):
    out = tmp_path / "resumed"
    assert main(tune_args(data, tiny_model, out, 2)) == 0
    first = [t.params for t in load_study(out).trials]
    capsys.readouterr()
    assert main(tune_args(data, tiny_model, out, 3)) == 0  # one more trial, not three
    trials = load_study(out).trials
    assert len(trials) == 3 and [t.params for t in trials[:2]] == first
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trial ")]
    best = max(t.value for t in trials if t.value is not None)
    assert len(lines) == 1 and lines[0].startswith("trial 3 (3 of 3 done): ") and f"(best {best:.4f}, trial" in lines[0]
    assert f"lr={trials[2].params['lr']:.3g}" in lines[0]


def test_a_study_of_other_settings_is_refused(data, tiny_model, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(tune_args(data, tiny_model, out, 1)) == 0
    other = tune_args(data, tiny_model, out, 1)
    other[other.index(data["dev"])] = data["train"]
    assert main(other) == 2
    assert "dev differ" in capsys.readouterr().err


def test_out_holding_other_files_is_refused(data, tiny_model, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(tune_args(data, tiny_model, tmp_path, 1)) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me"
