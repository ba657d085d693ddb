"""`slimtune plan` on the tiny model: matched modules, parameter counts, adapter size, measured steps."""

import json

import pytest

from slimtune.cli import main
from slimtune.compare.probe import group_names, probe


def test_probe_reports_what_training_would_build_and_save(tiny_model, tmp_path):
    from slimtune.runs.adapter_files import save_adapter
    from tests.conftest import build_classifier

    result = probe({"task": "classify", "method": "lora", "options": {"r": "2", "targets": "query,value"},
                    "model": tiny_model, "seq_len": 12, "batch_size": 4, "steps": 2})
    assert result["matched"] == [f"encoder.layer.{i}.attention.self.{p}" for i in (0, 1) for p in ("query", "value")]
    assert result["backbone_formula"] == 4 * 2 * (32 + 32)  # four 32x32 layers, A [2, 32] and B [32, 2]
    assert result["trainable_parameters"] == result["backbone_formula"] + result["head_parameters"] == 512 + 66
    assert len(result["step_seconds"]) == 3 and result["mean_step_seconds"] > 0 and result["mean_tokens"] == 12
    model, method, _, _ = build_classifier(tiny_model, "lora", {"r": "2", "targets": "query,value"})
    saved = save_adapter(tmp_path / "run", model, method, {})
    assert result["adapter_bytes"] == saved.stat().st_size


def test_probe_configures_the_method_as_train_does_for_the_task(tiny_model):
    from slimtune.methods.registry import create_method

    result = probe({"task": "classify", "method": "lora", "model": tiny_model, "seq_len": 8, "batch_size": 2,
                    "steps": 1})
    assert create_method("lora", {}, "classify").options.targets != create_method("lora").options.targets
    assert "encoder.layer.0.intermediate.dense" in result["matched"]  # every block linear, LoRA's classify default


def test_probe_lists_modules_that_train_without_a_wrapper(tiny_model):
    result = probe({"task": "ner", "method": "bitfit", "model": tiny_model, "seq_len": 8, "batch_size": 2,
                    "steps": 1})
    assert "encoder.layer.0.attention.self.query" in result["matched"] and "embeddings.LayerNorm" in result["matched"]


def test_group_names():
    names = ["embeddings.LayerNorm", "encoder.layer.0.output.dense", "encoder.layer.1.output.dense", "prompt"]
    assert group_names(names) == [("embeddings.LayerNorm", 1), ("encoder.layer.*.output.dense", 2), ("prompt", 1)]


def test_plan_measures_the_method_and_full_in_their_own_processes(tiny_model, toy_data, capsys):
    code = main(["plan", "--method", "lora", "--set", "r=2", "--set", "targets=query,value", "--model", tiny_model,
                 "--train", toy_data["train"], "--batch-size", "8", "--steps", "2", "--threads", "1", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    lora, full = result["method"], result["full"]
    assert lora["method"] == "lora" and full["method"] == "full" and lora["data_rows"] == 96
    assert full["trainable_parameters"] == full["total_parameters"] > 40 * lora["trainable_parameters"]
    assert full["adapter_bytes"] > 20 * lora["adapter_bytes"]
    for r in (lora, full):
        assert 50 * 2**20 < r["rss_after_loading"] <= r["peak_rss_bytes"] < 8 * 2**30


@pytest.mark.parametrize("extra, message", [(["--set", "bogus=1"], "unknown option 'bogus'"),
                                            (["--steps", "0"], "--steps is too small")])
def test_bad_plan_fails_before_loading(extra, message, capsys):
    assert main(["plan", "--method", "lora", *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_failed_measurement_says_why_once(tiny_model, capsys):
    code = main(["plan", "--method", "lora", "--set", "targets=nowhere", "--model", tiny_model, "--steps", "1",
                 "--no-full", "--threads", "1"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.count("error:") == 1
    assert last.startswith("slimtune plan: error: measuring lora failed: target patterns ['nowhere'] match no linear")


def test_a_measured_child_reports_progress_while_it_runs(tmp_path, monkeypatch):
    import sys

    from slimtune.compare.measure import run_measured

    monkeypatch.setenv("SLIMTUNE_PROGRESS_SECONDS", "1")
    calls = []
    child = run_measured([sys.executable, "-c", "import time; print('step 1 of 2', flush=True); time.sleep(3.5)"],
                         tmp_path / "child.log", on_wait=lambda seconds, line: calls.append((seconds, line)))
    assert child.returncode == 0 and child.peak_rss_bytes > 0
    assert len(calls) >= 2 and calls[-1][1] == "step 1 of 2" and calls[-1][0] >= 2
