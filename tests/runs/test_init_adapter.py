"""`train --init-adapter`: more training that starts from an adapter's weights, a peft directory included."""

import pytest
import torch

from slimtune.cli import main

peft = pytest.importorskip("peft")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))


def test_training_starts_from_a_peft_adapter(tmp_path, tiny_model, toy_ner_data):
    from slimtune.runs.adapter_files import load_adapter
    from tests.conftest import TASK_BATCHES
    from tests.runs.formats.test_peft_import import make_peft_adapter

    make_peft_adapter(tiny_model, "ner", "lora", tmp_path / "peft")
    code = main(["train", "--task", "ner", "--method", "lora", "--init-adapter", str(tmp_path / "peft"),
                 "--train", toy_ner_data["train"], "--dev", toy_ner_data["dev"], "--epochs", "1",
                 "--lr", "1e-12", "--out", str(tmp_path / "more")])
    assert code == 0
    start, trained = load_adapter(tmp_path / "peft"), load_adapter(tmp_path / "more")
    assert trained.config["options"] == start.config["options"] and trained.labels == start.labels
    batch = TASK_BATCHES["ner"](start.backbone, n=4, seed=3)
    with torch.no_grad():
        a = start.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        b = trained.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert (a - b).abs().max() < 1e-4  # a vanishing learning rate: the weights it started from
    assert a.abs().max() > 0.01


@pytest.mark.parametrize("flags,message", [(["--method", "adalora"], "pass --task ner --method lora"),
                                           (["--method", "lora", "--set", "r=2"], "fixes the method options")])
def test_an_adapter_that_does_not_fit_the_request_is_refused(tmp_path, tiny_model, toy_ner_data, capsys, flags,
                                                             message):
    from tests.runs.formats.test_peft_import import make_peft_adapter

    make_peft_adapter(tiny_model, "ner", "lora", tmp_path / "peft")
    capsys.readouterr()
    code = main(["train", "--task", "ner", *flags, "--init-adapter", str(tmp_path / "peft"),
                 "--train", toy_ner_data["train"], "--out", str(tmp_path / "more")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err
