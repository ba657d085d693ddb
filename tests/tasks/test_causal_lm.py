"""The causal-lm task on a tiny random Llama: the model split, LoRA on llama blocks, losses, generation, refusals."""

import copy
import json

import pytest
import torch

from slimtune.errors import SlimtuneError
from slimtune.methods.adaptation import adapter_state, load_adapter_state
from slimtune.tasks.generation import (GenerationOptions, chat_prompt_ids, generate_ids, generation_config_for,
                                 left_padded)
from slimtune.methods.lora import LoRALinear
from slimtune.methods.registry import create_method
from slimtune.tasks import get_task
from slimtune.tasks.causal_lm import normalise_answer
from tests.conftest import build_classifier, toy_lm_batch
from tests.tiny_llama import instruction_rows


def _perturbed(tiny_lm, method, options=None):
    model, m, params, backbone = build_classifier(tiny_lm, method, options, task="causal-lm")
    torch.manual_seed(3)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval(), m, backbone


def test_lora_at_init_reproduces_the_base_logits(tiny_lm):
    model, _, _, backbone = build_classifier(tiny_lm, "lora", task="causal-lm")
    plain = get_task("causal-lm").load_backbone(tiny_lm).model.eval()
    batch = toy_lm_batch(backbone)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    assert torch.equal(model.eval()(**inputs), plain(**inputs).logits)


def test_lora_targets_every_attention_and_mlp_projection_of_llama_blocks(tiny_lm):
    model, _, params, _ = build_classifier(tiny_lm, "lora", task="causal-lm")
    wrapped = sorted({n.rsplit(".", 1)[-1] for n, m in model.backbone.named_modules() if isinstance(m, LoRALinear)})
    assert wrapped == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert len(params) == 2 * 7 * 2  # A and B, 7 projections, 2 blocks: the tied LM head stays frozen
    assert not model.head.weight.requires_grad


def test_labelled_logits_are_the_rows_that_predict_response_tokens(tiny_lm):
    model, _, backbone = _perturbed(tiny_lm, "lora")
    batch = toy_lm_batch(backbone)
    full = model(batch["input_ids"], batch["attention_mask"])  # [B, T, V]
    picked = model(**batch)  # [N, V]
    predicts = batch["labels"][:, 1:] != -100
    assert picked.shape[0] == int(predicts.sum()) > 0
    assert torch.allclose(picked, full[:, :-1][predicts], atol=1e-6)


def test_loss_is_cross_entropy_over_response_tokens_only(tiny_lm):
    model, _, backbone = _perturbed(tiny_lm, "lora")
    batch = toy_lm_batch(backbone)
    logits = model(batch["input_ids"], batch["attention_mask"])
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                                 ignore_index=-100)
    task = get_task("causal-lm")
    assert torch.allclose(task.loss(model(**batch), batch["labels"]), expected, atol=1e-6)


def test_greedy_generation_with_an_adapter_is_deterministic_and_batching_agrees(tiny_lm):
    model, _, backbone = _perturbed(tiny_lm, "lora")
    prompts = [chat_prompt_ids(backbone.tokenizer, r["prompt"]) for r in instruction_rows(3, 0)]
    prompts[1] = prompts[1][:-3] + prompts[1][-2:]  # lengths differ, so the batch is left-padded
    options = GenerationOptions(max_new_tokens=6)
    first, second = generate_ids(model, prompts, options), generate_ids(model, prompts, options)
    assert first == second and any(first)
    assert [generate_ids(model, [p], options)[0] for p in prompts] == first
    plain = get_task("causal-lm").build_model(get_task("causal-lm").load_backbone(tiny_lm), []).eval()
    assert generate_ids(plain, prompts, options) != first  # the adapter is what generates


@pytest.mark.parametrize("method,options", [("lora", {}), ("prefix", {"length": "3"}), ("prompt", {"length": "3"}),
                                            ("layers", {"layers": "1", "cache": "true"}), ("adapter", {})])
def test_generation_with_the_key_value_cache_equals_recomputing(tiny_lm, method, options):
    """Methods that change attention inputs (prefix, prompt) or skip blocks (layers' cache) must keep the cache right."""
    model, _, backbone = _perturbed(tiny_lm, method, options)
    prompts = [chat_prompt_ids(backbone.tokenizer, r["prompt"]) for r in instruction_rows(2, 1)]
    prompts[0] = prompts[0][2:]
    config = generation_config_for(model, GenerationOptions(max_new_tokens=5))
    ids, mask = left_padded(prompts, backbone.tokenizer.pad_token_id)
    with torch.no_grad():
        cached = model.generate(ids, mask, generation_config=config)
        uncached = copy.deepcopy(config)
        uncached.use_cache = False
        recomputed = model.generate(ids, mask, generation_config=uncached)
        single = torch.tensor([prompts[1]])  # generate passes position ids; training passes none
        as_generate = model.lm(single, position_ids=torch.arange(single.shape[1])[None], use_cache=True).logits
        as_training = model(single, torch.ones_like(single))
    assert torch.equal(cached, recomputed)
    assert torch.allclose(as_generate, as_training, atol=1e-5)


@pytest.mark.parametrize("method,options", [("lora", {}), ("prefix", {"length": "3"}), ("prompt", {"length": "3"}),
                                            ("layers", {"layers": "1", "cache": "true"}), ("adapter", {})])
def test_a_decoding_step_on_the_key_value_cache_equals_the_full_forward(tiny_lm, method, options):
    """The logits of the last token, fed alone after the others went into the cache (as `generate` does), equal
    a full forward's: a method that skips the cache update (prefix) or reads the wrong argument fails here."""
    from transformers import DynamicCache

    model, _, backbone = _perturbed(tiny_lm, method, options)
    ids = torch.tensor([chat_prompt_ids(backbone.tokenizer, instruction_rows(1, 2)[0]["prompt"])])  # [1, T]
    positions, mask = torch.arange(ids.shape[1])[None], torch.ones_like(ids)
    cache = DynamicCache(config=model.lm.config)
    with torch.no_grad():
        full = model.lm(ids, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, -1]
        model.lm(ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], cache=cache,
                 use_cache=True)
        step = model.lm(ids[:, -1:], attention_mask=mask, position_ids=positions[:, -1:], cache=cache,
                        use_cache=True).logits[:, -1]
    assert cache.get_seq_length() >= ids.shape[1]  # the step's key and value went in too
    assert torch.allclose(step, full, atol=1e-5)


def test_save_and_load_reproduce_generation(tiny_lm):
    model, method, backbone = _perturbed(tiny_lm, "prefix", {"length": "2"})
    fresh, fresh_method, _, _ = build_classifier(tiny_lm, "prefix", {"length": "2"}, task="causal-lm", seed=7)
    load_adapter_state(fresh, fresh_method, adapter_state(model, method, export=True))
    prompts = [chat_prompt_ids(backbone.tokenizer, "is it good? great film")]
    options = GenerationOptions(max_new_tokens=5)
    assert generate_ids(fresh.eval(), prompts, options) == generate_ids(model, prompts, options)


def test_sampling_is_reproducible_with_a_seed(tiny_lm):
    model, _, backbone = _perturbed(tiny_lm, "lora")
    prompts = [chat_prompt_ids(backbone.tokenizer, "is it good?")]
    options = GenerationOptions(max_new_tokens=8, sample=True, temperature=1.5, top_k=50, top_p=0.95, seed=4)
    assert generate_ids(model, prompts, options) == generate_ids(model, prompts, options)


def test_over_long_examples_are_dropped_and_reported(tiny_lm, tmp_path, capsys):
    task = get_task("causal-lm")
    backbone = task.load_backbone(tiny_lm)
    path = tmp_path / "data.jsonl"
    rows = [{"prompt": "hi", "response": "yes"}, {"prompt": "a long prompt " * 10, "response": "no"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    features = task.encode(task.read(path), backbone.tokenizer, [], 40)
    assert len(features) == 1
    assert "dropped 1 of 2 examples longer than 40 tokens" in capsys.readouterr().err
    with pytest.raises(SlimtuneError, match=f"all 2 examples are longer than 5 tokens: {path}:1"):
        task.encode(task.read(path), backbone.tokenizer, [], 5)


def test_head_only_is_refused_with_the_reason():
    with pytest.raises(SlimtuneError, match="head serves only task classify, ner, multilabel, not causal-lm: .*tied"):
        get_task("causal-lm").check_method(create_method("head", {}))


def test_bitfit_on_a_model_without_biases_is_refused(tmp_path):
    from tests.tiny_llama import make_tiny_llama_lm

    with pytest.raises(SlimtuneError, match="no bias terms"):
        build_classifier(make_tiny_llama_lm(tmp_path / "lm"), "bitfit", task="causal-lm")


@pytest.mark.parametrize("answer,normal", [("Positive.", "positive"), ("  negative\nbecause", "negative"), ("", "")])
def test_answers_are_normalised_before_exact_match(answer, normal):
    assert normalise_answer(answer) == normal
