"""slimtune runs exported with `slimtune export --format peft` and loaded by the real `peft` package give
slimtune's logits: ner through AutoModelForTokenClassification, causal-lm through AutoModelForCausalLM, classify
through AutoModel plus the documented pooling and the exported head."""

import json

import pytest
import torch
from safetensors.torch import load_file

from slimtune.cli import main
from tests.runs.formats.conftest import PROMPT_LENGTH, make_run, slimtune_logits

peft = pytest.importorskip("peft")

EXPORTABLE = ("lora", "lora-rslora", "lora-pissa", "lora-olora", "dora", "dora-pissa", "adalora", "prompt", "ia3", "vera", "loha",
              "lokr")


def peft_logits(adapter_dir, base_dir: str, task: str, method: str, batch: dict) -> torch.Tensor:
    """The logits plain transformers + peft give for `batch`, as the exported README says to compute them."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification

    if task == "ner":
        base = AutoModelForTokenClassification.from_pretrained(base_dir, num_labels=5)
    elif task == "causal-lm":
        base = AutoModelForCausalLM.from_pretrained(base_dir)
    else:
        base = AutoModel.from_pretrained(base_dir)
    model = peft.PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    skip = PROMPT_LENGTH if method == "prompt" else 0  # peft keeps the prompt positions in its outputs
    if task != "classify":
        return out.logits[:, skip:]
    hidden = out.last_hidden_state[:, skip:]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    head = load_file(str(adapter_dir / "classifier_head.safetensors"))
    assert json.loads((adapter_dir / "classifier_head.json").read_text())["pooling"] == "mean"
    return pooled @ head["weight"].T + head["bias"]


@pytest.mark.parametrize("task", ["classify", "ner", "causal-lm"])
@pytest.mark.parametrize("method", EXPORTABLE)
def test_peft_reproduces_slimtune_logits(tmp_path, base_dirs, task, method, capsys):
    run = make_run(base_dirs[task], task, method, tmp_path / "run")
    out = tmp_path / "peft"
    assert main(["export", "--adapter", str(run), "--format", "peft", "--out", str(out)]) == 0
    expected, batch = slimtune_logits(run, task)
    got = peft_logits(out, base_dirs[task], task, method, batch)
    real = batch["attention_mask"].bool()
    if task == "classify":
        assert (got - expected).abs().max() < 1e-4
    else:
        assert (got[real] - expected[real]).abs().max() < 1e-4
    assert expected.abs().max() > 0.01  # a real output, not an empty comparison


@pytest.mark.parametrize("method", ["lora", "adalora", "dora", "ia3", "vera", "lokr"])
def test_classify_through_the_pooler_is_peft_sequence_classification(tmp_path, base_dirs, method):
    """pooling=pooler is BERT's own sequence classifier: AutoModelForSequenceClassification + PeftModel."""
    from transformers import AutoModelForSequenceClassification

    run = make_run(base_dirs["classify"], "classify", method, tmp_path / "run", pooling="pooler")
    assert main(["export", "--adapter", str(run), "--format", "peft", "--out", str(tmp_path / "peft")]) == 0
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and set(config["modules_to_save"]) == {"bert.pooler", "classifier"}
    expected, batch = slimtune_logits(run, "classify")
    base = AutoModelForSequenceClassification.from_pretrained(base_dirs["classify"], num_labels=2)
    model = peft.PeftModel.from_pretrained(base, str(tmp_path / "peft")).eval()
    with torch.no_grad():
        got = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert (got - expected).abs().max() < 1e-4 and expected.abs().max() > 0.01


def test_exported_files_follow_peft(tmp_path, base_dirs):
    run = make_run(base_dirs["ner"], "ner", "lora", tmp_path / "run")
    out = tmp_path / "peft"
    assert main(["export", "--adapter", str(run), "--format", "peft", "--out", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["task_type"], config["r"], config["lora_alpha"]) == ("LORA", "TOKEN_CLS", 4, 16.0)
    assert config["target_modules"] == ["query", "value"] and config["modules_to_save"] == ["classifier"]
    keys = set(load_file(str(out / "adapter_model.safetensors")))
    assert "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight" in keys
    assert "base_model.model.classifier.weight" in keys
    card = (out / "README.md").read_text()
    assert "base_model:" in card and "best_dev_accuracy: 0.7500" in card and "AutoModelForTokenClassification" in card


@pytest.mark.parametrize("method,instead", [("bitfit", "--format merged"), ("subspace", "--format merged"),
                                            ("adapter", "slimtune serve"), ("prefix", "slimtune serve")])
def test_methods_peft_cannot_represent_are_refused(tmp_path, base_dirs, method, instead, capsys):
    run = make_run(base_dirs["classify"], "classify", method, tmp_path / "run")
    code = main(["export", "--adapter", str(run), "--format", "peft", "--out", str(tmp_path / "peft")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert f"peft has no form for method {method}" in err and instead in err
    assert not (tmp_path / "peft").exists()


def test_prompt_through_the_pooler_is_refused(tmp_path, base_dirs, capsys):
    run = make_run(base_dirs["classify"], "classify", "prompt", tmp_path / "run", pooling="pooler")
    assert main(["export", "--adapter", str(run), "--format", "peft", "--out", str(tmp_path / "peft")]) == 2
    assert "pools the first prompt vector" in capsys.readouterr().err
    assert not (tmp_path / "peft").exists()


def test_export_merged_is_merge(tmp_path, base_dirs):
    run = make_run(base_dirs["ner"], "ner", "lora", tmp_path / "run")
    assert main(["export", "--adapter", str(run), "--format", "merged", "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "config.json").is_file()
