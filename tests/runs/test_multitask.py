"""End to end through `slimtune.cli.main`: a multi-task run on classify + ner, then each task used by name."""

import json

import pytest
import torch
from safetensors.torch import load_file

from slimtune.cli import main
from slimtune.errors import SlimtuneError
from slimtune.runs.multitask import MultiTrainRequest, train_multitask
from slimtune.tasks.multitask.specs import TaskSpec
from slimtune.training.config import TrainConfig
from tests.conftest import Interrupt, interrupt_at, ner_sentences, sentiment_rows, write_conll, write_tsv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("multitask-data")
    return {"sst": write_tsv(root / "sst.tsv", sentiment_rows(64, 0)),
            "sst_dev": write_tsv(root / "sst_dev.tsv", sentiment_rows(24, 1)),
            "ner": write_conll(root / "ner.conll", ner_sentences(64, 0), scheme="iobes"),
            "ner_dev": write_conll(root / "ner_dev.conll", ner_sentences(24, 1), scheme="iobes")}


def task_flags(data) -> list[str]:
    return ["--tasks", f"sst=classify:{data['sst']}:{data['sst_dev']}",
            "--tasks", f"conll=ner:{data['ner']}:{data['ner_dev']}"]


@pytest.fixture(scope="module", params=["shared", "per-task"])
def run(request, data, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("multitask-run") / request.param
    argv = ["train", "--task", "multi", "--method", "lora", *task_flags(data), "--model", tiny_model,
            "--sharing", request.param, "--epochs", "2", "--batch-size", "8", "--lr", "1e-2", "--out", str(out)]
    assert main(argv) == 0
    return out


def test_adapter_records_every_task_and_namespaces_its_tensors(run):
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["task"] == "multi" and config["method"] == "lora"
    assert config["tasks"]["sst"] == {"task": "classify", "labels": ["neg", "pos"]}
    assert config["tasks"]["conll"]["task"] == "ner" and config["tasks"]["conll"]["scheme"] == "iobes"
    keys = set(load_file(run / "adapter.safetensors"))
    assert {"task_models.sst.head.1.weight", "task_models.conll.head.1.weight", "loss_weights.log_vars"} <= keys
    method_keys = [k for k in keys if k.startswith("backbone.")]
    if config["sharing"] == "per-task":
        assert {k.split(".")[1] for k in method_keys} == {"sst", "conll"}
    else:
        assert not any(k.startswith(("backbone.sst.", "backbone.conll.")) for k in method_keys)
    assert (run / "task_weights.png").exists()


def test_eval_by_task_name_reproduces_the_best_dev_scores(run, data, capsys):
    summary = json.loads((run / "metrics.json").read_text())
    best = next(h for h in summary["history"] if h["step"] == summary["best_step"])
    for name, dev, metric in (("sst", data["sst_dev"], "accuracy"), ("conll", data["ner_dev"], "f1")):
        assert main(["eval", "--adapter", str(run), "--task-name", name, "--data", dev, "--json"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics[metric] == best[f"dev_{name}_{metric}"] == summary["best_dev_per_task"][name]
        assert metrics["loss"] == pytest.approx(best[f"dev_{name}_loss"], abs=1e-6)
    assert summary["best_dev_mean_score"] == pytest.approx(
        (best["dev_sst_accuracy"] + best["dev_conll_f1"]) / 2)


def test_predict_by_task_name(run, capsys):
    assert main(["predict", "--adapter", str(run), "--task-name", "sst", "--json", "a great film"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("neg", "pos")
    assert main(["predict", "--adapter", str(run), "--task-name", "conll", "--json", "anna went to paris"]) == 0
    assert "entities" in json.loads(capsys.readouterr().out)


def test_a_multi_task_adapter_needs_a_known_task_name(run, data, capsys):
    assert main(["eval", "--adapter", str(run), "--data", data["sst_dev"]]) == 2
    assert "multi-task adapter; choose one of its tasks with --task-name: sst, conll" in capsys.readouterr().err
    assert main(["predict", "--adapter", str(run), "--task-name", "pos", "x"]) == 2
    assert "has no task 'pos'; its tasks: sst, conll" in capsys.readouterr().err


def test_dynamic_int8_eval_by_task_name(run, data, capsys):
    summary = json.loads((run / "metrics.json").read_text())
    assert main(["eval", "--adapter", str(run), "--task-name", "sst", "--inference-int8", "int8",
                 "--data", data["sst_dev"], "--json"]) == 0
    accuracy = json.loads(capsys.readouterr().out)["accuracy"]
    assert abs(accuracy - summary["best_dev_per_task"]["sst"]) <= 2 / 24  # int8 rounding may flip a row or two


def test_multi_task_run_on_an_int8_base(data, tiny_model, tmp_path, capsys):
    out = tmp_path / "int8"
    assert main(["train", "--task", "multi", "--method", "lora", *task_flags(data), "--model", tiny_model,
                 "--sharing", "per-task", "--base-int8", "int8", "--epochs", "1", "--batch-size", "8",
                 "--lr", "1e-2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert json.loads((out / "adapter_config.json").read_text())["base_int8"] == "int8"
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["base_int8"] == "int8"
    for name, dev, metric in (("sst", data["sst_dev"], "accuracy"), ("conll", data["ner_dev"], "f1")):
        assert main(["eval", "--adapter", str(out), "--task-name", name, "--data", dev, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[metric] == summary["best_dev_per_task"][name]  # same int8 base
    assert main(["eval", "--adapter", str(out), "--task-name", "sst", "--inference-int8", "int8",
                 "--data", data["sst_dev"]]) == 2
    assert "int8 base already" in capsys.readouterr().err
    assert main(["train", "--task", "multi", "--method", "subnetwork", *task_flags(data), "--model", tiny_model,
                 "--quantize", "int8", "--out", str(tmp_path / "refused")]) == 2
    assert "--base-int8 int8 keeps them only as int8" in capsys.readouterr().err


def test_a_single_task_adapter_refuses_a_task_name(data, tiny_model, tmp_path, capsys):
    out = str(tmp_path / "single")
    assert main(["train", "--method", "head", "--train", data["sst"], "--model", tiny_model, "--epochs", "1",
                 "--out", out]) == 0
    assert main(["eval", "--adapter", out, "--task-name", "sst", "--data", data["sst_dev"]]) == 2
    assert "single-task adapter" in capsys.readouterr().err


@pytest.mark.parametrize("tasks, extra, message", [
    (["a=classify:{sst}", "b=tagging:{ner}"], [], "unknown task 'tagging'"),
    (["a=classify:{sst}", "b=ner:/no/such.conll"], [], "task b: /no/such.conll: no such file"),
    (["a=classify:{sst}", "a=ner:{ner}"], [], "repeated: a"),
    (["a=classify:{sst}"], [], "at least two --tasks"),
    (["a=classify"], [], "NAME=TYPE:TRAIN"),
    (["a.b=classify:{sst}", "c=ner:{ner}"], [], "task name 'a.b'"),
    (["a=classify:{sst}", "b=ner:{ner}"], ["--weights", "a=2"], "--weights needs --loss-weights fixed"),
    (["a=classify:{sst}", "b=ner:{ner}"], ["--loss-weights", "fixed", "--weights", "c=2"], "got 'c=2'"),
    (["a=classify:{sst}", "b=ner:{ner}"], ["--train", "{sst}"], "--train does not apply to --task multi"),
    (["a=classify:{sst}", "b=ner:{ner}"], ["--pair-epochs", "2"], "--pair-epochs does not apply to --task multi\n"),
    (["a=classify:{sst}", "b=causal-lm:{sst}"], [], "task b: causal-lm cannot be mixed; multi-task runs mix"),
    (["a=classify:{sst}", "b=ner:{ner}"], ["--nproc", "2"], "--task multi does not support --nproc yet"),
])
def test_bad_multi_task_arguments_are_clear_errors(data, tiny_model, tmp_path, capsys, tasks, extra, message):
    argv = ["train", "--task", "multi", "--method", "lora", "--model", tiny_model, "--out", str(tmp_path / "x")]
    argv += [a for spec in tasks for a in ("--tasks", spec.format(**data))] + [e.format(**data) for e in extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_tasks_without_task_multi_is_an_error(data, capsys):
    assert main(["train", "--method", "lora", "--tasks", f"a=classify:{data['sst']}", "--out", "x"]) == 2
    assert "--tasks needs --task multi" in capsys.readouterr().err


def _request(data, tiny_model, out, **config) -> MultiTrainRequest:
    specs = [TaskSpec("sst", "classify", data["sst"], data["sst_dev"]), TaskSpec("conll", "ner", data["ner"])]
    return MultiTrainRequest(tasks=specs, method="lora", out_dir=str(out), model=tiny_model, sharing="per-task",
                             sampling="temperature", options={"dropout": "0.1"},
                             config=TrainConfig(epochs=2, batch_size=8, lr=5e-3, patience=0, seed=3, **config))


def test_interrupted_then_resumed_multi_task_run_equals_uninterrupted(data, tiny_model, tmp_path):
    train_multitask(_request(data, tiny_model, tmp_path / "a", checkpoint_every=4))

    with pytest.raises(Interrupt):
        train_multitask(_request(data, tiny_model, tmp_path / "b", checkpoint_every=4),
                        step_callbacks=[interrupt_at(11)])
    request = _request(data, tiny_model, tmp_path / "b", checkpoint_every=4)
    request.resume = True
    train_multitask(request)
    a, b = load_file(tmp_path / "a" / "adapter.safetensors"), load_file(tmp_path / "b" / "adapter.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = lambda path: [l.split('"lr"')[0] for l in path.read_text().splitlines()]  # examples/s differ
    assert strip(tmp_path / "a" / "metrics.jsonl") == strip(tmp_path / "b" / "metrics.jsonl")


def test_fixed_weights_stay_fixed_and_are_logged(data, tiny_model, tmp_path):
    request = _request(data, tiny_model, tmp_path / "fixed")
    request.loss_weights, request.fixed_weights = "fixed", {"sst": 1.0, "conll": 0.5}
    request.config.epochs = 1
    summary = train_multitask(request)
    assert summary["final_task_weights"] == {"sst": 1.0, "conll": 0.5}
    records = [json.loads(l) for l in (tmp_path / "fixed" / "metrics.jsonl").read_text().splitlines()]
    weights = [r["weights"] for r in records if r["type"] == "task_weights"]
    assert len(weights) == summary["steps"] and all(w == {"sst": 1.0, "conll": 0.5} for w in weights)
    assert "loss_weights.log_vars" not in load_file(tmp_path / "fixed" / "adapter.safetensors")


def test_a_multi_task_run_refuses_several_torchrun_processes(data, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SlimtuneError, match="--task multi does not support --nproc yet"):
        train_multitask(_request(data, tiny_model, tmp_path / "ddp"))
