"""Multi-label classification (tasks/multilabel.py): metrics against scikit-learn, reading label sets, and
train → eval → predict → merge through the CLI on the tiny model."""

import json

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from slimtune.cli import main
from slimtune.data.table import read_labelled_texts
from slimtune.errors import SlimtuneError
from slimtune.tasks import get_task
from slimtune.tasks.multilabel import label_set_scores
from tests.conftest import sentiment_rows


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_scikit_learn(seed):
    g = torch.Generator().manual_seed(seed)
    gold, predicted = torch.rand(40, 5, generator=g) < 0.3, torch.rand(40, 5, generator=g) < 0.3
    gold[:, 4] = False  # a label no row has: zero_division
    scores = label_set_scores(gold, predicted)
    y, p = gold.numpy(), predicted.numpy()
    assert scores["micro_f1"] == pytest.approx(f1_score(y, p, average="micro", zero_division=0))
    assert scores["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    assert scores["subset_accuracy"] == pytest.approx(accuracy_score(y, p))
    precision, recall, f1, support = precision_recall_fscore_support(y, p, zero_division=0)
    for i, row in enumerate(scores["per_label"]):
        assert (row["precision"], row["recall"], row["f1-score"], row["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i]))


def test_label_sets_from_each_format(tmp_path):
    (tmp_path / "a.tsv").write_text("text\tlabels\none\tb|a\ntwo\t\nthree\ta\n")
    (tmp_path / "a.jsonl").write_text('{"text": "one", "labels": ["b", "a", "b"]}\n{"text": "two", "labels": []}\n')
    (tmp_path / "a.csv").write_text('text,labels\none,"a|b"\n')
    assert [r.label for r in read_labelled_texts(tmp_path / "a.tsv", label_sets=True)] == [("a", "b"), (), ("a",)]
    assert [r.label for r in read_labelled_texts(tmp_path / "a.jsonl", label_sets=True)] == [("a", "b"), ()]
    assert [r.label for r in read_labelled_texts(tmp_path / "a.csv", label_sets=True)] == [("a", "b")]
    (tmp_path / "bad.tsv").write_text("text\tlabels\none\ta||b\n")
    with pytest.raises(SlimtuneError, match="bad.tsv:2: empty label"):
        read_labelled_texts(tmp_path / "bad.tsv", label_sets=True)


def _label_sets(n, seed):
    """Sentiment plus 'long' for texts of more than four words: rows with zero, one or two labels."""
    rows = []
    for text, label in sentiment_rows(n, seed):
        labels = ([label] if label == "pos" else []) + (["long"] if len(text.split()) > 4 else [])
        rows.append(json.dumps({"text": text, "labels": labels}))
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    (root / "train.jsonl").write_text(_label_sets(160, 0))
    (root / "dev.jsonl").write_text(_label_sets(48, 1))
    assert main(["train", "--task", "multilabel", "--method", "lora", "--train", str(root / "train.jsonl"),
                 "--dev", str(root / "dev.jsonl"), "--model", tiny_model, "--batch-size", "8", "--epochs", "4",
                 "--lr", "1e-2", "--patience", "0", "--out", str(root / "run")]) == 0
    return root


def test_train_records_labels_and_a_dev_tuned_threshold(run):
    config = json.loads((run / "run" / "adapter_config.json").read_text())
    assert config["task"] == "multilabel" and config["labels"] == ["long", "pos"]
    assert 0 < config["threshold"] < 1
    assert json.loads((run / "run" / "metrics.json").read_text())["threshold"] == config["threshold"]


def test_eval_uses_the_recorded_threshold(run, capsys):
    assert main(["eval", "--adapter", str(run / "run"), "--data", str(run / "dev.jsonl"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    threshold = json.loads((run / "run" / "adapter_config.json").read_text())["threshold"]
    assert metrics["threshold"] == threshold and set(metrics["per_label"]) == {"long", "pos"}
    assert metrics["micro_f1"] > 0.6
    assert main(["eval", "--adapter", str(run / "run"), "--data", str(run / "dev.jsonl")]) == 0
    assert "micro-F1" in capsys.readouterr().out


def test_predict_gives_label_sets(run, capsys):
    assert main(["predict", "--adapter", str(run / "run"), "--json", "the film was good and the plot"]) == 0
    prediction = json.loads(capsys.readouterr().out)
    threshold = json.loads((run / "run" / "adapter_config.json").read_text())["threshold"]
    assert set(prediction["scores"]) == {"long", "pos"}
    assert prediction["labels"] == [n for n, p in prediction["scores"].items() if p >= threshold]
    assert main(["predict", "--adapter", str(run / "run"), "a text"]) == 0
    assert capsys.readouterr().out.endswith("\ta text\n")


def test_merged_export_records_the_sigmoid_head(run):
    assert main(["merge", "--adapter", str(run / "run"), "--out", str(run / "merged")]) == 0
    head = json.loads((run / "merged" / "classifier_head.json").read_text())
    assert head["activation"] == "sigmoid" and head["labels"] == ["long", "pos"]


def test_a_file_without_labels_is_one_line_error(tiny_model, tmp_path):
    (tmp_path / "t.tsv").write_text("text\tlabels\none\t\ntwo\t\n")
    with pytest.raises(SlimtuneError, match="no row has a label"):
        get_task("multilabel").label_names(get_task("multilabel").read(tmp_path / "t.tsv"))
