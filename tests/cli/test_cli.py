"""End to end through `slimtune.cli.main`, on the tiny model: train → eval → predict → merge, and bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file

from slimtune.cli import main
from tests.conftest import write_tsv


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    from tests.conftest import sentiment_rows

    root = tmp_path_factory.mktemp("cli")
    train = write_tsv(root / "train.tsv", sentiment_rows(64, 0))
    dev = write_tsv(root / "dev.tsv", sentiment_rows(16, 1))
    out = root / "run"
    code = main(["train", "--task", "classify", "--method", "lora", "--train", train, "--dev", dev, "--out", str(out),
                 "--model", tiny_model, "--epochs", "1", "--batch-size", "8", "--set", "r=4", "--seed", "3"])
    assert code == 0
    return {"root": root, "run": out, "dev": dev, "train": train}


def test_run_directory_holds_adapter_config_and_metrics(trained):
    run = trained["run"]
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["method"] == "lora" and config["labels"] == ["neg", "pos"] and config["options"]["r"] == 4
    assert len(config["base_fingerprint"]) == 32
    keys = set(load_file(run / "adapter.safetensors"))
    assert keys and all("lora_" in k or k.startswith("head.") for k in keys)
    assert (run / "metrics.jsonl").read_text().count('"type": "eval"') == 1
    assert not list(run.glob("*.tmp"))


def test_eval_json(trained, capsys):
    assert main(["eval", "--adapter", str(trained["run"]), "--data", trained["dev"], "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1 and metrics["examples"] == 16


def test_eval_report_lists_every_class(trained, capsys):
    assert main(["eval", "--adapter", str(trained["run"]), "--data", trained["dev"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("accuracy ") and "macro-F1" in lines[0]
    assert [l.split()[0] for l in lines[-2:]] == ["neg", "pos"] and lines[-3].split()[0] == "label"


def test_predict_arguments_and_file(trained, capsys, tmp_path):
    assert main(["predict", "--adapter", str(trained["run"]), "good film", "dull plot"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(l.split("\t")[0] in ("neg", "pos") for l in lines)
    texts = tmp_path / "texts.txt"
    texts.write_text("good film\n\nawful acting\n")
    assert main(["predict", "--adapter", str(trained["run"]), "--file", str(texts), "--json"]) == 0
    rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["good film", "awful acting"]
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-3 for r in rows)


def test_merged_directory_loads_with_plain_transformers(trained, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from slimtune.runs.adapter_files import load_adapter
    from slimtune.models.task_models import pool

    out = tmp_path / "merged"
    assert main(["merge", "--adapter", str(trained["run"]), "--out", str(out)]) == 0
    texts = ["good film", "the plot was dull and boring"]
    loaded = load_adapter(trained["run"])
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = loaded.model(**batch)
        plain = AutoModel.from_pretrained(out).eval()
        hidden = plain(**batch).last_hidden_state
    head = load_file(out / "classifier_head.safetensors")
    logits = pool(hidden, batch["attention_mask"], "mean") @ head["weight"].T + head["bias"]
    assert (logits - expected).abs().max() < 1e-5
    assert plain.config.id2label == {0: "neg", 1: "pos"}


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


@pytest.mark.parametrize("argv, message", [
    (["train", "--label-names"], "slimtune train: error: argument --label-names: expected one argument"),
    (["train", "--bogus"], "slimtune train: error: the following arguments are required: --out"),
    (["nosuch"], "slimtune: error: argument COMMAND: invalid choice: 'nosuch'")])
def test_misused_flags_give_one_line_not_the_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and err.startswith(message) and "--help)" in err


def test_bad_inputs_give_one_clear_line(trained, capsys, tmp_path, tiny_model, other_tiny_model):
    run, train = str(trained["run"]), trained["train"]
    base = ["train", "--method", "lora", "--model", tiny_model, "--out", str(tmp_path / "x")]
    assert "no such file" in _error(capsys, base + ["--train", str(tmp_path / "missing.tsv")])
    (tmp_path / "empty.tsv").write_text("")
    assert "file is empty" in _error(capsys, base + ["--train", str(tmp_path / "empty.tsv")])
    (tmp_path / "bad.tsv").write_text("sentence\tlabel\nok\t1\nbroken row\n")
    assert "bad.tsv:3:" in _error(capsys, base + ["--train", str(tmp_path / "bad.tsv")])
    assert "unknown method 'lorra'" in _error(capsys, [*base[:2], "lorra", *base[3:], "--train", train])
    assert "unknown option 'rank'" in _error(capsys, base + ["--train", train, "--set", "rank=4"])
    assert "already holds a slimtune output" in _error(capsys, [*base[:-1], run, "--train", train])
    (tmp_path / "unknown.tsv").write_text("sentence\tlabel\ngood film\tneutral\n")
    assert "unknown.tsv:2: label 'neutral'" in _error(
        capsys, ["eval", "--adapter", run, "--data", str(tmp_path / "unknown.tsv")])
    assert "different base model" in _error(
        capsys, ["eval", "--adapter", run, "--data", trained["dev"], "--model", other_tiny_model])
    assert "not an adapter directory" in _error(capsys, ["predict", "--adapter", str(tmp_path), "hi"])
    assert "no checkpoint to resume from" in _error(capsys, base + ["--train", train, "--resume"])
    assert "out of memory: could not allocate" in _error(capsys, base + ["--train", train, "--set", f"r={10**12}"])
    assert not (tmp_path / "x").exists()


def test_train_defaults_to_lora_and_says_so_in_help(capsys):
    from slimtune.cli import build_parser

    assert build_parser().parse_args(["train", "--train", "rows.tsv", "--out", "run"]).method == "lora"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "(see `slimtune methods`) (default: lora)" in " ".join(capsys.readouterr().out.split())
