"""Adapters made and perturbed with the real `peft` package, used by slimtune wherever it takes --adapter: the
same outputs as peft; and peft directories that are malformed or made for another model, refused in one line."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from slimtune.cli import main
from tests.conftest import TASK_BATCHES, TASK_LABELS
from tests.runs.formats.conftest import PROMPT_LENGTH, make_run

peft = pytest.importorskip("peft")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))


def peft_config(kind: str, task_type: str, task: str):
    targets = ["q_proj", "v_proj"] if task == "causal-lm" else ["query", "value"]
    if kind == "lora":
        return peft.LoraConfig(task_type=task_type, r=4, lora_alpha=8, target_modules=targets)
    if kind == "rslora":
        return peft.LoraConfig(task_type=task_type, r=4, lora_alpha=8, target_modules=targets, use_rslora=True)
    if kind == "dora":
        return peft.LoraConfig(task_type=task_type, r=4, lora_alpha=8, target_modules=targets, use_dora=True)
    if kind == "adalora":
        return peft.AdaLoraConfig(task_type=task_type, init_r=4, target_r=2, lora_alpha=8, total_step=10,
                                  target_modules=targets)
    if kind in ("ia3", "ia3-no-feedforward"):
        keys, feedforward = (["k_proj", "v_proj"], ["down_proj"]) if task == "causal-lm" else (
            ["key", "value"], ["output.dense"])
        feedforward = [] if kind == "ia3-no-feedforward" else feedforward
        return peft.IA3Config(task_type=task_type, target_modules=keys + feedforward, feedforward_modules=feedforward)
    if kind == "vera":
        return peft.VeraConfig(task_type=task_type, r=8, projection_prng_key=5, target_modules=targets)
    if kind == "loha":
        return peft.LoHaConfig(task_type=task_type, r=2, alpha=4, target_modules=targets)
    if kind == "lokr":
        return peft.LoKrConfig(task_type=task_type, r=2, alpha=4, target_modules=targets)
    return peft.PromptTuningConfig(task_type=task_type, num_virtual_tokens=PROMPT_LENGTH)


def make_peft_adapter(base_dir: str, task: str, kind: str, out) -> torch.nn.Module:
    """Save a peft adapter with every trainable weight randomly moved; returns the peft model in eval mode."""
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification)

    torch.manual_seed(7)
    if task == "seq":  # BERT's own sequence classifier: slimtune's classify pooled through the pooler
        base, task_type = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2), "SEQ_CLS"
    elif task == "ner":
        base, task_type = AutoModelForTokenClassification.from_pretrained(base_dir, num_labels=5), "TOKEN_CLS"
    elif task == "causal-lm":
        base, task_type = AutoModelForCausalLM.from_pretrained(base_dir), "CAUSAL_LM"
    else:
        base, task_type = AutoModel.from_pretrained(base_dir), "FEATURE_EXTRACTION"
    model = peft.get_peft_model(base, peft_config(kind, task_type, task))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(str(out))
    if task in ("ner", "seq"):  # peft keeps no label names; slimtune reads them from id2label
        config = json.loads((out / "adapter_config.json").read_text())
        config["id2label"] = dict(enumerate(TASK_LABELS["ner" if task == "ner" else "classify"]))
        (out / "adapter_config.json").write_text(json.dumps(config))
    return model.eval()


@pytest.mark.parametrize("task,kind", [("ner", "lora"), ("ner", "rslora"), ("ner", "prompt"), ("causal-lm", "lora"),
                                       ("causal-lm", "adalora"), ("causal-lm", "prompt"), ("ner", "dora"),
                                       ("causal-lm", "dora"), ("ner", "ia3"), ("causal-lm", "ia3"),
                                       ("ner", "ia3-no-feedforward"), ("ner", "vera"), ("causal-lm", "vera"),
                                       ("ner", "loha"), ("causal-lm", "loha"), ("ner", "lokr"), ("causal-lm", "lokr")])
def test_slimtune_gives_peft_outputs(tmp_path, tiny_model, tiny_lm, task, kind):
    from slimtune.runs.adapter_files import load_adapter

    base_dir = tiny_lm if task == "causal-lm" else tiny_model
    peft_model = make_peft_adapter(base_dir, task, kind, tmp_path / "peft")
    loaded = load_adapter(tmp_path / "peft")  # what eval, predict and merge call with --adapter
    batch = TASK_BATCHES[task](loaded.backbone, n=4, seed=3)
    with torch.no_grad():
        got = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        want = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    want = want[:, PROMPT_LENGTH:] if kind == "prompt" else want
    real = batch["attention_mask"].bool()
    assert (got[real] - want[real]).abs().max() < 1e-4
    assert loaded.config["imported_from"]["format"] == "peft"


def test_a_peft_sequence_classifier_is_classify_through_the_pooler(tmp_path, tiny_model):
    from slimtune.runs.adapter_files import load_adapter

    peft_model = make_peft_adapter(tiny_model, "seq", "lora", tmp_path / "peft")
    loaded = load_adapter(tmp_path / "peft")
    assert loaded.config["pooling"] == "pooler" and loaded.labels == TASK_LABELS["classify"]
    batch = TASK_BATCHES["classify"](loaded.backbone, n=4, seed=3)
    with torch.no_grad():
        got = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        want = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert (got - want).abs().max() < 1e-4


def test_predict_and_inspect_a_peft_classifier(tmp_path, tiny_model, capsys):
    """A FEATURE_EXTRACTION LoRA adapter plus a pooled head: `slimtune predict` scores as peft + the pooling do."""
    peft_model = make_peft_adapter(tiny_model, "classify", "lora", tmp_path / "peft")
    torch.manual_seed(1)
    head = {"weight": torch.randn(2, 32), "bias": torch.randn(2)}
    save_file(head, str(tmp_path / "peft" / "classifier_head.safetensors"))
    (tmp_path / "peft" / "classifier_head.json").write_text(json.dumps({"pooling": "mean", "labels": ["neg", "pos"]}))
    texts = ["the film was good", "dull plot and weak acting"]
    assert main(["predict", "--adapter", str(tmp_path / "peft"), "--json", *texts]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(tiny_model)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = peft_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    want = (((hidden * mask).sum(1) / mask.sum(1)) @ head["weight"].T + head["bias"]).softmax(-1)
    for row, probabilities in zip(got, want):
        assert row["scores"]["pos"] == pytest.approx(float(probabilities[1]), abs=1e-3)
    assert main(["inspect", str(tmp_path / "peft")]) == 0
    assert "lora" in capsys.readouterr().out


def test_export_then_import_is_the_same_run(tmp_path, tiny_model):
    from slimtune.runs.adapter_files import load_adapter

    run = make_run(tiny_model, "ner", "adalora", tmp_path / "run")
    assert main(["export", "--adapter", str(run), "--format", "peft", "--out", str(tmp_path / "peft")]) == 0
    original, imported = load_adapter(run), load_adapter(tmp_path / "peft")
    assert imported.labels == original.labels and imported.config["scheme"] == "iob2"
    batch = TASK_BATCHES["ner"](original.backbone, n=4, seed=3)
    with torch.no_grad():
        a = original.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        b = imported.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert (a - b).abs().max() < 1e-5


def test_an_exported_run_checks_its_base_by_fingerprint(tmp_path, tiny_model, other_tiny_model, capsys):
    """Same module names and shapes, other weights: slimtune_config.json's fingerprint tells them apart."""
    run = make_run(tiny_model, "ner", "lora", tmp_path / "run")
    assert main(["export", "--adapter", str(run), "--format", "peft", "--out", str(tmp_path / "peft")]) == 0
    err = refusal(capsys, ["merge", "--adapter", str(tmp_path / "peft"), "--model", other_tiny_model,
                           "--out", str(tmp_path / "merged")])
    assert "trained on another base model" in err


def refusal(capsys, argv) -> str:
    capsys.readouterr()  # what building the adapter printed (transformers' progress bars) is not the refusal
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_malformed_peft_config_is_refused(tmp_path, tiny_lm, capsys):
    make_peft_adapter(tiny_lm, "causal-lm", "lora", tmp_path / "peft")
    path = tmp_path / "peft" / "adapter_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "r": "four"}))
    assert "r: Input should be a valid integer" in refusal(capsys, ["inspect", str(tmp_path / "peft")])
    path.write_text(json.dumps({**config, "peft_type": "BOFT"}))
    assert "peft_type 'BOFT' has no slimtune method" in refusal(capsys, ["inspect", str(tmp_path / "peft")])
    path.write_text(json.dumps({**config, "use_dora": True}))  # DoRA without its magnitude vectors
    assert "lora_magnitude_vector" in refusal(capsys, ["inspect", str(tmp_path / "peft")])
    path.write_text(json.dumps({**config, "init_lora_weights": "pissa"}))
    assert "path_initial_model_for_weight_conversion" in refusal(capsys, ["inspect", str(tmp_path / "peft")])
    path.write_text("{not json")
    assert "not valid JSON" in refusal(capsys, ["inspect", str(tmp_path / "peft")])


def test_mismatched_shapes_are_refused(tmp_path, tiny_lm, capsys):
    make_peft_adapter(tiny_lm, "causal-lm", "lora", tmp_path / "peft")
    weights = tmp_path / "peft" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    tensors[key] = torch.zeros(4, 20)
    save_file(tensors, str(weights))
    err = refusal(capsys, ["inspect", str(tmp_path / "peft")])
    assert key in err and "(4, 20)" in err and "another model" in err


def test_an_adapter_for_another_model_is_refused(tmp_path, tiny_lm, other_tiny_model, capsys):
    """A Llama adapter given a BERT base with --model: its module names are not there."""
    make_peft_adapter(tiny_lm, "causal-lm", "lora", tmp_path / "peft")
    err = refusal(capsys, ["merge", "--adapter", str(tmp_path / "peft"), "--model", other_tiny_model,
                           "--out", str(tmp_path / "merged")])
    assert "model.layers.0.self_attn.q_proj" in err and "does not have" in err
    assert not (tmp_path / "merged").exists()


def _rewrite_config(directory, **changes):
    path = directory / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _rewrite_tensors(directory, change):
    path = directory / "adapter_model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


BROKEN = {
    "garbage tensors": (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x00" * 40), "cannot read tensors"),
    "pickled weights only": (lambda d: ((d / "adapter_model.safetensors").rename(d / "adapter_model.bin")),
                             "pickle, which slimtune never loads"),
    "a factor missing": (lambda d: _rewrite_tensors(d, lambda t: t.pop(next(k for k in t if "lora_B" in k))),
                         "needs ['lora_A.weight', 'lora_B.weight']"),
    "a stray tensor": (lambda d: _rewrite_tensors(d, lambda t: t.update(extra=torch.zeros(1))), "unexpected tensor extra"),
    "rank zero": (lambda d: _rewrite_config(d, r=0), "r: Input should be greater than 0"),
    "a missing base": (lambda d: _rewrite_config(d, base_model_name_or_path="/no/such/model"), "does not exist"),
    "per-module ranks": (lambda d: _rewrite_config(d, rank_pattern={"q_proj": 2}), "rank_pattern"),
    "an unknown task type": (lambda d: _rewrite_config(d, task_type="SEQ_2_SEQ_LM"), "has no slimtune task"),
    "an ia3 vector of the wrong width": (lambda d: _rewrite_tensors(d, lambda t: t.update(
        {k: torch.ones(5, 1) for k in t if "k_proj" in k})), "k_proj.ia3_l has shape (5, 1)", "ia3"),
    "vera projections from another key": (lambda d: _rewrite_config(d, projection_prng_key=6),
                                          "not the projection projection_prng_key=6 draws", "vera"),
    "vera projections missing": (lambda d: _rewrite_tensors(d, lambda t: t.pop("base_model.vera_B")),
                                 "lacks base_model.vera_A or vera_B", "vera"),
    "a full lokr factor where it is low-rank": (lambda d: _rewrite_tensors(d, lambda t: t.update(
        {k.replace("w2_a", "w2"): torch.ones(2, 2) for k in list(t) if k.endswith("w2_a")})), "this layer needs", "lokr"),
    "lokr with both factors decomposed": (lambda d: _rewrite_config(d, decompose_both=True), "decompose_both", "lokr"),
    "loha per-module alphas": (lambda d: _rewrite_config(d, alpha_pattern={"q_proj": 1}), "alpha_pattern", "loha"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_peft_directories_are_one_line_errors(tmp_path, tiny_lm, capsys, case):
    break_it, message, *kind = BROKEN[case]
    make_peft_adapter(tiny_lm, "causal-lm", kind[0] if kind else "lora", tmp_path / "peft")
    break_it(tmp_path / "peft")
    assert message in refusal(capsys, ["inspect", str(tmp_path / "peft")])
    assert not list((tmp_path / "cache" / "peft-imports").glob("*/adapter_config.json"))  # nothing half-converted


def test_eval_of_an_exported_run_equals_eval_of_the_run(tmp_path, tiny_model, capsys):
    from tests.conftest import ner_sentences, write_conll

    run = make_run(tiny_model, "ner", "lora", tmp_path / "run")
    assert main(["export", "--adapter", str(run), "--format", "peft", "--out", str(tmp_path / "peft")]) == 0
    data = write_conll(tmp_path / "dev.conll", ner_sentences(12, 5))
    capsys.readouterr()
    scores = []
    for adapter in (run, tmp_path / "peft"):
        assert main(["eval", "--adapter", str(adapter), "--data", data, "--json"]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[0] == scores[1]


def test_the_bundled_model_travels_by_its_hub_id(tmp_path):
    """A run on the bundled MiniLM names it by its hub id, which slimtune maps back to the bundled copy offline."""
    from slimtune.runs.adapter_files import load_adapter

    run = make_run("all-minilm-l6-v2", "classify", "lora", tmp_path / "run")
    assert main(["export", "--adapter", str(run), "--format", "peft", "--out", str(tmp_path / "peft")]) == 0
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    original, imported = load_adapter(run), load_adapter(tmp_path / "peft")
    assert imported.config["base_fingerprint"] == original.config["base_fingerprint"]


def test_quantize_and_merge_take_a_peft_directory(tmp_path, tiny_model):
    make_peft_adapter(tiny_model, "ner", "lora", tmp_path / "peft")
    assert main(["quantize", "--adapter", str(tmp_path / "peft"), "--out", str(tmp_path / "int8")]) == 0
    assert json.loads((tmp_path / "int8" / "adapter_config.json").read_text())["inference_int8"] == "int8"
    assert main(["merge", "--adapter", str(tmp_path / "peft"), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "config.json").is_file()
