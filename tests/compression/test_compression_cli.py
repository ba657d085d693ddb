"""prune → train → eval and train → quantize → eval through `slimtune.cli.main` on the tiny model."""

import json

import pytest
from safetensors.torch import load_file

from slimtune.cli import main
from slimtune.models.loading import load_backbone
from slimtune.models.pruned_layout import LAYOUT_KEY
from tests.conftest import sentiment_rows, write_tsv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("compression-cli")
    return {"root": root, "train": write_tsv(root / "train.tsv", sentiment_rows(64, 0)),
            "dev": write_tsv(root / "dev.tsv", sentiment_rows(16, 1))}


@pytest.fixture(scope="module")
def pruned(tiny_model, data):
    """The tiny model with 3 of its 8 heads and 20 of its 128 FFN neurons removed, ranked on task data."""
    out = data["root"] / "pruned"
    assert main(["prune", "--model", tiny_model, "--method", "structured", "--heads", "3", "--neurons", "20",
                 "--data", data["train"], "--out", str(out), "--batch-size", "16"]) == 0
    return out


def test_structured_prune_writes_a_smaller_model_and_its_report(pruned, tiny_model, capsys):
    report = json.loads((pruned / "prune_report.json").read_text())
    assert sum(report["layout"]["attention_heads"]) == 5 and min(report["layout"]["attention_heads"]) >= 1
    assert sum(report["layout"]["intermediate_sizes"]) == 108
    assert report["after"]["parameters"] < report["before"]["parameters"]
    assert abs(report["after"]["file_bytes"] - (pruned / "model.safetensors").stat().st_size) < 1024  # metadata
    assert report["after"]["file_bytes"] < report["before"]["file_bytes"]
    assert 0 <= report["before"]["probe_accuracy"] <= 1 and 0 <= report["after"]["probe_accuracy"] <= 1
    assert "gradient" in report["importance"]
    model = load_backbone(str(pruned)).model
    assert getattr(model.config, LAYOUT_KEY) == report["layout"]
    assert "pooler.dense.weight" in load_file(pruned / "model.safetensors")


def test_pruned_model_trains_evaluates_and_merges(pruned, data, capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--method", "lora", "--model", str(pruned), "--train", data["train"], "--dev", data["dev"],
                 "--out", str(run), "--epochs", "1", "--batch-size", "8"]) == 0
    capsys.readouterr()
    assert main(["eval", "--adapter", str(run), "--data", data["dev"], "--json"]) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert main(["eval", "--adapter", str(run), "--data", data["dev"], "--json", "--inference-int8", "int8"]) == 0
    int8 = json.loads(capsys.readouterr().out)
    assert fp32["examples"] == int8["examples"] == 16 and abs(fp32["loss"] - int8["loss"]) < 1e-2
    assert main(["merge", "--adapter", str(run), "--out", str(tmp_path / "merged")]) == 0
    assert load_backbone(str(tmp_path / "merged")).model.config.slimtune_pruning["attention_heads"] == \
        json.loads((pruned / "prune_report.json").read_text())["layout"]["attention_heads"]


def test_structured_prune_ranks_on_ner_data_too(tiny_model, tmp_path, capsys):
    from tests.conftest import ner_sentences, write_conll

    train = write_conll(tmp_path / "train.conll", ner_sentences(32, 0))
    assert main(["prune", "--model", tiny_model, "--method", "structured", "--sparsity", "0.25", "--scope", "layer",
                 "--task", "ner", "--data", train, "--out", str(tmp_path / "p"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == {"attention_heads": [3, 3], "intermediate_sizes": [48, 48]}
    assert "probe_f1" in report["after"] and report["probe_rows"] == 32 and "ner loss" in report["importance"]


def test_magnitude_prune_keeps_shapes_and_loads_with_plain_transformers(tiny_model, tmp_path, capsys):
    from transformers import AutoModel

    out = tmp_path / "magnitude"
    assert main(["prune", "--model", tiny_model, "--method", "magnitude", "--sparsity", "0.5", "--out", str(out),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pruned_weights"] == report["prunable_weights"] // 2
    assert report["after"]["nonzero_parameters"] == report["before"]["nonzero_parameters"] - report["pruned_weights"]
    assert report["after"]["parameters"] == report["before"]["parameters"]
    assert report["latency_batch"].startswith("synthetic")
    plain = AutoModel.from_pretrained(out)
    assert int((plain.encoder.layer[0].attention.self.query.weight == 0).sum()) > 0


def test_quantize_writes_an_int8_run_that_eval_and_predict_use(data, tiny_model, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "int8"
    assert main(["train", "--method", "lora", "--model", tiny_model, "--train", data["train"], "--dev", data["dev"],
                 "--out", str(run), "--epochs", "1", "--batch-size", "8"]) == 0
    capsys.readouterr()
    assert main(["quantize", "--adapter", str(run), "--out", str(out), "--data", data["dev"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["int8"]["encoder_bytes"] < report["fp32"]["encoder_bytes"]
    assert abs(report["int8"]["quality"]["loss"] - report["fp32"]["quality"]["loss"]) < 1e-2
    assert json.loads((out / "adapter_config.json").read_text())["inference_int8"] == "int8"
    assert main(["predict", "--adapter", str(out), "good film", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("neg", "pos")
    assert "already quantized" in _error(capsys, ["quantize", "--adapter", str(out), "--out", str(tmp_path / "q2")])


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_bad_prune_requests_give_one_clear_line(tiny_model, pruned, tmp_path, capsys):
    base = ["prune", "--model", tiny_model, "--out", str(tmp_path / "x")]
    assert "takes --sparsity" in _error(capsys, base + ["--method", "magnitude", "--heads", "2"])
    assert "not both" in _error(capsys, base + ["--method", "structured", "--heads", "2", "--sparsity", "0.5"])
    assert "between 0 and 6 heads" in _error(capsys, base + ["--method", "structured", "--heads", "7"])
    assert "not a multiple of 2" in _error(capsys, base + ["--method", "structured", "--heads", "3",
                                                            "--scope", "layer"])
    assert "already holds a slimtune output" in _error(capsys, ["prune", "--model", tiny_model, "--method", "magnitude",
                                          "--sparsity", "0.1", "--out", str(pruned)])
