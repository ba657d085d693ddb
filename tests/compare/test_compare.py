"""`slimtune compare` end to end on the tiny model: 2 methods × 2 seeds, one method failing at run time."""

import csv
import json
import shlex

import pytest

from slimtune.cli import main
from slimtune.compare import runner
from tests.conftest import sentiment_rows, write_tsv


@pytest.fixture(scope="module")
def compared(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data = {"train": write_tsv(root / "train.tsv", sentiment_rows(48, 0)),
            "dev": write_tsv(root / "dev.tsv", sentiment_rows(16, 1)),
            "test": write_tsv(root / "test.tsv", sentiment_rows(16, 2))}
    # lora's targets match no layer of the model: a failure only the training process finds
    argv = ["compare", "--methods", "head,lora", "--seeds", "2", "--train", data["train"], "--dev", data["dev"],
            "--test", data["test"], "--model", tiny_model, "--batch-size", "8", "--threads", "1",
            "--set", "lora.targets=nomatch", "--out", str(root / "out")]
    code = main(argv)
    return {"code": code, "out": root / "out", "argv": argv, "data": data, "model": tiny_model}


def test_failing_method_is_reported_and_the_others_run(compared):
    assert compared["code"] == 1  # some runs failed
    summary = json.loads((compared["out"] / "results.json").read_text())
    head, lora = summary["methods"]
    assert head["method"] == "head" and head["runs"] == 2 and head["failed"] == 0
    assert lora["method"] == "lora" and lora["runs"] == 0 and lora["failed"] == 2
    assert "match no linear layer" in lora["errors"][0]
    table = (compared["out"] / "results.md").read_text()
    assert "failed: " in table.split("| lora |")[1]
    assert f"Command: `{shlex.join(['slimtune', *compared['argv']])}`" in table  # as given, nothing added


def test_runs_are_measured(compared):
    runs = json.loads((compared["out"] / "results.json").read_text())["runs"]
    done = [r for r in runs if r["status"] == "ok"]
    assert [r["seed"] for r in done] == [42, 43]
    for r in done:
        assert 0 < r["train_seconds"] < r["process_seconds"]
        assert 50 * 2**20 < r["peak_rss_bytes"] < 8 * 2**30  # an interpreter with torch loaded, not bytes nor RAM
        assert r["quality_source"] == "test" and r["test"]["examples"] == 16 and 0 <= r["quality"] <= 1
        assert r["adapter_bytes"] > 4 * r["trainable_parameters"]  # fp32 head weights plus the file header
    head = json.loads((compared["out"] / "results.json").read_text())["methods"][0]
    assert head["quality"]["n"] == 2 and head["quality"]["std"] is not None


def test_csv_has_one_row_per_run_and_html_every_method(compared):
    with open(compared["out"] / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["seed"], r["status"]) for r in rows] == [
        ("head", "42", "ok"), ("head", "43", "ok"), ("lora", "42", "failed"), ("lora", "43", "failed")]
    page = (compared["out"] / "report.html").read_text()
    assert "<td>head</td>" in page and "<td>lora</td>" in page
    assert page.count('src="data:image/png;base64,') == 4 and "http" not in page.split("<body>")[1]


def test_rerun_reuses_finished_runs(compared, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runner, "run_measured", no_training)
    before = (compared["out"] / "runs" / "head-s42" / "result.json").stat().st_mtime_ns
    argv = [a for a in compared["argv"] if a not in ("head,lora", "lora.targets=nomatch", "--set")]
    argv.insert(argv.index("--seeds"), "head")
    assert main(argv) == 0
    assert "head-s42: finished earlier, reused" in capsys.readouterr().err
    assert (compared["out"] / "runs" / "head-s42" / "result.json").stat().st_mtime_ns == before


def test_report_only_runs_nothing(compared, monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "run_measured", None)
    argv = [a if a != str(compared["out"]) else str(tmp_path / "fresh") for a in compared["argv"]]
    assert main(argv + ["--report-only"]) == 0
    table = (tmp_path / "fresh" / "results.md").read_text()
    assert "| head | — | — | 0 | not run yet |" in table


def test_changed_settings_run_again(compared, monkeypatch, tmp_path):
    import shutil

    from slimtune.compare.measure import ChildResult
    from slimtune.compare.settings import CompareSettings

    shutil.copytree(compared["out"] / "runs" / "head-s42", tmp_path / "runs" / "head-s42")
    monkeypatch.setattr(runner, "run_measured", lambda *a, **k: ChildResult(2, 0, 0.1, "slimtune train: error: boom"))
    settings = CompareSettings(task="classify", train=compared["data"]["train"], methods=["head"], seeds=[42],
                               epochs=2)
    lines = []
    record = runner.run_one(settings, "head", 42, tmp_path / "runs", lines.append)
    assert lines[0] == "head-s42: settings changed since it ran; running it again"
    assert record["status"] == "failed" and record["error"] == "slimtune train: error: boom"
    assert not (tmp_path / "runs" / "head-s42" / "result.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--methods", "lora,nosuch"], "unknown method 'nosuch'"),
    (["--methods", "lora", "--set", "lora.bogus=1"], "unknown option 'bogus'"),
    (["--methods", "lora", "--set", "r=1"], "METHOD.KEY=VALUE"),
    (["--methods", "lora", "--lr", "full=1e-4"], "'full' is not in --methods"),
    (["--task", "ner", "--methods", "lora,features"], "method features serves only task classify, not ner"),
])
def test_bad_command_fails_before_any_run(extra, message, toy_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", "--train", toy_data["train"], "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_every_run_starts_with_an_empty_feature_cache(tiny_model, toy_data, tmp_path, monkeypatch):
    users_cache = tmp_path / "users-cache"
    monkeypatch.setenv("SLIMTUNE_CACHE", str(users_cache))
    out = tmp_path / "out"
    assert main(["compare", "--methods", "features", "--seeds", "2", "--train", toy_data["train"], "--model",
                 tiny_model, "--batch-size", "8", "--threads", "1", "--out", str(out)]) == 0
    for seed in (42, 43):  # the same data and model: without a cold cache the second run would read the first's
        assert "examples encoded, cached at" in (out / "runs" / f"features-s{seed}" / "train.log").read_text()
    assert not users_cache.exists()
    for run in json.loads((out / "results.json").read_text())["runs"]:
        assert run["train_seconds"] >= run["prepare_seconds"] > 0
