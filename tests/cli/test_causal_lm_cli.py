"""causal-lm end to end through `slimtune.cli.main` on the tiny Llama: train (fp32 and int8 base) → eval → generate →
merge, zero-shot scoring of the base model, and refusals."""

import json

import pytest
import torch

from slimtune.cli import main
from tests.tiny_llama import instruction_rows


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def runs(tiny_lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("causal-cli")
    train, dev = _jsonl(root / "train.jsonl", instruction_rows(24, 0)), _jsonl(root / "dev.jsonl", instruction_rows(8, 1))
    common = ["train", "--task", "causal-lm", "--model", tiny_lm, "--method", "lora", "--train", train, "--dev", dev,
              "--epochs", "1", "--batch-size", "8", "--lr", "1e-2"]
    assert main(common + ["--out", str(root / "fp32")]) == 0
    assert main(common + ["--out", str(root / "int8"), "--base-int8", "int8"]) == 0
    return {"root": root, "dev": dev, "model": tiny_lm}


def test_train_records_tokens_per_second_memory_and_the_quantized_base(runs):
    fp32 = json.loads((runs["root"] / "fp32" / "metrics.json").read_text())
    int8 = json.loads((runs["root"] / "int8" / "metrics.json").read_text())
    assert fp32["tokens_per_second"] > 0 and fp32["train_peak_rss_bytes"] > 0
    assert int8["base_int8"] == "int8" and int8["model_weight_bytes"] < fp32["model_weight_bytes"]
    assert int8["trainable_parameters"] == fp32["trainable_parameters"]
    assert json.loads((runs["root"] / "int8" / "adapter_config.json").read_text())["base_int8"] == "int8"


@pytest.mark.parametrize("run", ["fp32", "int8"])
def test_eval_reports_loss_perplexity_and_exact_match(runs, run, capsys):
    assert main(["eval", "--adapter", str(runs["root"] / run), "--data", runs["dev"], "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"loss", "perplexity", "token_accuracy", "exact_match"} <= set(metrics)
    assert metrics["perplexity"] == pytest.approx(torch.tensor(metrics["loss"]).exp().item(), rel=1e-5)
    assert metrics["examples"] == 8 and metrics["response_tokens"] == 16  # "yes"/"no" (1 token each) + end of turn


def test_zero_shot_eval_of_the_base_model(runs, capsys):
    assert main(["eval", "--task", "causal-lm", "--model", runs["model"], "--data", runs["dev"]]) == 0
    assert "exact match" in capsys.readouterr().out
    assert main(["eval", "--data", runs["dev"], "--model", runs["model"]]) == 2
    assert "give --adapter DIR, or --task causal-lm" in capsys.readouterr().err


def test_generate_streams_and_is_deterministic(runs, capsys):
    args = ["generate", "--adapter", str(runs["root"] / "fp32"), "is it good? great film", "--max-new-tokens", "4"]
    assert main(args) == 0
    streamed = capsys.readouterr().out
    assert main(args + ["--json"]) == 0
    answer = json.loads(capsys.readouterr().out)["response"]
    assert streamed == f"> is it good? great film\n{answer}\n"
    assert main(args + ["--sample", "--temperature", "0"]) == 2
    assert "temperature must be positive" in capsys.readouterr().err


def test_merged_model_loads_in_transformers_and_gives_the_adapter_logits(runs):
    from transformers import AutoModelForCausalLM

    from slimtune.runs.adapter_files import load_adapter

    out = runs["root"] / "merged"
    assert main(["merge", "--adapter", str(runs["root"] / "fp32"), "--out", str(out)]) == 0
    loaded = load_adapter(runs["root"] / "fp32")
    ids = torch.tensor([loaded.backbone.tokenizer("is it good? great film")["input_ids"]])
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert torch.allclose(merged(ids).logits, loaded.model(ids, torch.ones_like(ids)), atol=1e-5)


def test_merging_an_int8_trained_adapter_is_refused(runs, capsys):
    assert main(["merge", "--adapter", str(runs["root"] / "int8"), "--out", str(runs["root"] / "m8")]) == 2
    assert "int8 base" in capsys.readouterr().err


def test_head_only_is_refused(runs, tmp_path, capsys):
    code = main(["train", "--task", "causal-lm", "--model", runs["model"], "--method", "head", "--train", runs["dev"],
                 "--out", str(tmp_path / "head")])
    assert code == 2 and "head serves only task classify, ner, multilabel, not causal-lm" in capsys.readouterr().err
