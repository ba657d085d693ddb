"""End to end through `slimtune.cli.main`: train, eval, predict and merge a ner adapter on the tiny model."""

import json

import pytest
import torch

from slimtune.cli import main
from tests.conftest import ner_sentences, write_conll


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    """A well-trained full adapter (for predictions worth checking) and a one-epoch LoRA adapter (for merging)."""
    root = tmp_path_factory.mktemp("ner-cli")
    data = {"train": write_conll(root / "train.conll.gz", ner_sentences(96, 0), scheme="iobes"),
            "dev": write_conll(root / "dev.conll", ner_sentences(32, 1), scheme="iobes")}
    common = ["train", "--task", "ner", "--train", data["train"], "--dev", data["dev"], "--model", tiny_model,
              "--batch-size", "8", "--patience", "0"]
    assert main(common + ["--method", "full", "--epochs", "6", "--lr", "3e-3", "--out", str(root / "full")]) == 0
    assert main(common + ["--method", "lora", "--epochs", "1", "--out", str(root / "lora")]) == 0
    return {"root": root, **data}


def test_train_records_labels_and_the_files_scheme(runs):
    config = json.loads((runs["root"] / "full" / "adapter_config.json").read_text())
    assert config["task"] == "ner" and config["scheme"] == "iobes"
    assert config["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert json.loads((runs["root"] / "full" / "metrics.json").read_text())["best_dev_f1"] >= 0.8


def test_eval_json_and_report(runs, capsys):
    assert main(["eval", "--adapter", str(runs["root"] / "full"), "--data", runs["dev"], "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"f1", "precision", "recall", "token_accuracy", "per_type"} <= set(metrics)
    assert metrics["f1"] >= 0.8 and set(metrics["per_type"]) == {"LOC", "PER"}
    assert main(["eval", "--adapter", str(runs["root"] / "full"), "--data", runs["dev"]]) == 0
    assert "entity F1" in capsys.readouterr().out


def test_predict_prints_entities_with_character_spans(runs, capsys):
    text = "Bob Marley is of New York, and anna of paris."
    assert main(["predict", "--adapter", str(runs["root"] / "full"), "--json", text]) == 0
    prediction = json.loads(capsys.readouterr().out)
    found = [(e["type"], e["text"]) for e in prediction["entities"]]
    assert ("PER", "Bob Marley") in found and ("LOC", "New York") in found
    assert all(text[e["start"] : e["end"]] == e["text"] for e in prediction["entities"])
    assert prediction["words"][:3] == ["Bob", "Marley", "is"] and len(prediction["tags"]) == len(prediction["words"])
    assert prediction["tags"][:2] == ["B-PER", "E-PER"]  # in the training data's scheme
    assert main(["predict", "--adapter", str(runs["root"] / "full"), text]) == 0
    assert "  PER     0:10" in capsys.readouterr().out
    assert main(["predict", "--adapter", str(runs["root"] / "full"), " "]) == 0
    assert "(no entities)" in capsys.readouterr().out


def test_predict_appends_a_tag_column_to_a_conll_file(runs, tmp_path):
    out = tmp_path / "tagged.conll"
    args = ["predict", "--adapter", str(runs["root"] / "full"), "--conll-in", runs["dev"], "--conll-out", str(out)]
    assert main(args + ["--scheme", "iob2"]) == 0
    source = open(runs["dev"]).read().splitlines()
    tagged = out.read_text().splitlines()
    assert len(tagged) == len(source)
    for before, after in zip(source, tagged):
        assert after.split()[:-1] == before.split()  # trailing spaces gone, one column added
    assert {line.split()[-1] for line in tagged if line} <= {"O", "B-LOC", "I-LOC", "B-PER", "I-PER"}


def test_merged_model_loads_in_transformers_with_the_same_logits(runs, tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from slimtune.runs.adapter_files import load_adapter

    out = tmp_path / "merged"
    assert main(["merge", "--adapter", str(runs["root"] / "lora"), "--out", str(out)]) == 0
    merged = AutoModelForTokenClassification.from_pretrained(out).eval()
    assert merged.config.id2label == {0: "O", 1: "B-LOC", 2: "I-LOC", 3: "B-PER", 4: "I-PER"}
    batch = AutoTokenizer.from_pretrained(out)(["bob marley is of new york", "paris"], padding=True,
                                               return_tensors="pt")
    with torch.no_grad():
        expected = load_adapter(runs["root"] / "lora").model(**batch)
        assert (merged(**batch).logits - expected).abs().max() < 1e-5


@pytest.mark.parametrize("args,message", [
    (["--text-col", "x"], "--text-col does not apply to task ner"),
    (["--scheme", "iob1"], "IOB1"),
])
def test_bad_reader_flags_fail_cleanly(runs, tmp_path, capsys, args, message):
    argv = ["train", "--task", "ner", "--method", "head", "--train", runs["dev"], "--out", str(tmp_path / "x")]
    assert main(argv + args) == 2
    assert message in capsys.readouterr().err


def test_conll_flags_go_together(runs, capsys):
    assert main(["predict", "--adapter", str(runs["root"] / "full"), "--conll-in", runs["dev"]]) == 2
    assert "--conll-in and --conll-out go together" in capsys.readouterr().err
