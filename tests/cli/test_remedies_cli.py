"""`slimtune train --adversarial / --augment` end to end on the tiny model, and their refusals."""

import json

import pytest

from slimtune.cli import main


def _train(data, model, out, *extra, task="classify"):
    return main(["train", "--task", task, "--method", "lora", "--train", data["train"], "--dev", data["dev"],
                 "--model", model, "--batch-size", "8", "--epochs", "1", "--out", str(out), *extra])


@pytest.mark.parametrize("extra", [("--adversarial", "fgm", "--adv-epsilon", "0.5"),
                                   ("--adversarial", "pgd", "--adv-steps", "2"),
                                   ("--augment", "eda", "--augment-rate", "0.2")])
def test_classify_trains_with_each_remedy(tiny_model, toy_data, tmp_path, extra):
    assert _train(toy_data, tiny_model, tmp_path / "run", *extra) == 0
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert config[extra[0][2:].replace("-", "_")] == extra[1]
    assert main(["eval", "--adapter", str(tmp_path / "run"), "--data", toy_data["dev"], "--json"]) == 0


def test_ner_trains_adversarially(tiny_model, toy_ner_data, tmp_path):
    assert _train(toy_ner_data, tiny_model, tmp_path / "run", "--adversarial", "fgm", task="ner") == 0


@pytest.mark.parametrize("extra, message", [
    (("--augment", "eda"), "--augment does not apply to task ner"),
    (("--adversarial", "fgm", "--adv-epsilon", "-1"), "--adv-epsilon"),
    (("--augment", "eda", "--augment-rate", "2"), "--augment-rate"),
])
def test_refusals_are_one_line_exit_2(tiny_model, toy_ner_data, tmp_path, capsys, extra, message):
    assert _train(toy_ner_data, tiny_model, tmp_path / "run", *extra, task="ner") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not (tmp_path / "run").exists()


def test_adversarial_refuses_a_model_that_skips_the_embeddings(tiny_model, toy_data, tmp_path, capsys):
    """`features` trains a head on sentence features computed once: there are no embeddings to perturb."""
    assert main(["train", "--method", "features", "--set", "reducer=tfidf", "--train", toy_data["train"],
                 "--dev", toy_data["dev"], "--model", tiny_model, "--epochs", "1", "--adversarial", "fgm",
                 "--out", str(tmp_path / "run")]) == 2
    assert "--adversarial needs a backbone with input embeddings" in capsys.readouterr().err
