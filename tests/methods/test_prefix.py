import pytest
import torch
from safetensors.torch import load_file

from slimtune.errors import SlimtuneError
from slimtune.methods.adaptation import adapter_state, load_adapter_state
from slimtune.methods.prefix_attention import DecoderPrefixAttention, PrefixAttention
from slimtune.methods.registry import create_method
from slimtune.runs.adapter_files import save_adapter
from slimtune.runs.train import TrainRequest, train
from slimtune.training.config import TrainConfig
from tests.conftest import Interrupt, build_classifier, interrupt_at, tiny_llama, toy_batch

REPARAM = {"length": "3", "reparam": "true", "reparam_hidden": "16"}


def _perturb(params):
    torch.manual_seed(5)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)


def test_output_length_unchanged_and_prefix_changes_outputs(tiny_model):
    base, _, _, backbone = build_classifier(tiny_model, "head")
    model, _, _, _ = build_classifier(tiny_model, "prefix", {"length": "4"})
    batch = toy_batch(backbone)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    hidden = model.eval().backbone(**inputs).last_hidden_state
    assert hidden.shape == (*batch["input_ids"].shape, 32)
    assert not torch.allclose(hidden, base.eval().backbone(**inputs).last_hidden_state)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_same_logits_whatever_the_padding(tiny_model, implementation):
    model, _, params, backbone = build_classifier(tiny_model, "prefix", {"length": "4"})
    _perturb(params)
    model.eval().backbone.config._attn_implementation = implementation
    ids = torch.tensor(backbone.tokenizer(["the film was good"])["input_ids"])  # [1, T]
    pad = backbone.tokenizer.pad_token_id
    logits = []
    for extra in (0, 5):
        padded = torch.cat([ids, torch.full((1, extra), pad)], dim=1)
        mask = torch.cat([torch.ones_like(ids), torch.zeros(1, extra, dtype=ids.dtype)], dim=1)
        logits.append(model(input_ids=padded, attention_mask=mask))
    assert (logits[0] - logits[1]).abs().max() < 1e-5


def test_eager_and_sdpa_attention_agree_on_a_padded_batch(tiny_model):
    model, _, params, backbone = build_classifier(tiny_model, "prefix", {"length": "4"})
    _perturb(params)
    batch = toy_batch(backbone)
    assert (batch["attention_mask"] == 0).any()
    results = []
    for implementation in ("sdpa", "eager"):
        model.eval().backbone.config._attn_implementation = implementation
        results.append(model(**batch))
    assert (results[0] - results[1]).abs().max() < 1e-5


def test_reparam_parameters_match_the_formula(tiny_model):
    _, method, params, backbone = build_classifier(tiny_model, "prefix", REPARAM)
    # per layer: input 3*32, MLP 32*16+16 and 16*(32+32)+(32+32); 2 layers; head 32*2+2
    assert sum(p.numel() for p in params) == 2 * (3 * 32 + 32 * 16 + 16 + 16 * 64 + 64) + 66


def test_reparam_is_folded_at_save_and_loading_needs_no_mlp(tiny_model, tmp_path):
    model, method, params, backbone = build_classifier(tiny_model, "prefix", REPARAM)
    _perturb(params)
    save_adapter(tmp_path, model, method, {})
    saved = load_file(tmp_path / "adapter.safetensors")
    prefix_keys = {k for k in saved if not k.startswith("head.")}
    layers = [f"backbone.encoder.layer.{i}.attention.self" for i in (0, 1)]
    assert prefix_keys == {f"{l}.prefix_{kind}" for l in layers for kind in ("key", "value")}
    assert all(saved[k].shape == (3, 32) for k in prefix_keys)

    fresh, fresh_method, _, _ = build_classifier(tiny_model, "prefix", REPARAM, seed=99)
    load_adapter_state(fresh, fresh_method, saved)
    assert not any(isinstance(m, torch.nn.Linear) for w in fresh.modules() if isinstance(w, PrefixAttention)
                   for n, m in w.named_modules() if not n.startswith("base_layer"))
    batch = toy_batch(backbone)
    assert torch.equal(model.eval()(**batch), fresh.eval()(**batch))


def test_training_state_keeps_the_mlp_so_a_run_can_resume(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "prefix", REPARAM)
    _perturb(params)
    state = adapter_state(model, method)
    assert any(".reparam." in k for k in state) and not any(k.endswith("prefix_key") for k in state)
    fresh, fresh_method, _, _ = build_classifier(tiny_model, "prefix", REPARAM, seed=99)
    load_adapter_state(fresh, fresh_method, state)
    assert all(w.reparam is not None for w in fresh.modules() if isinstance(w, PrefixAttention))
    batch = toy_batch(backbone)
    assert torch.equal(model.eval()(**batch), fresh.eval()(**batch))


def test_interrupted_reparam_run_resumes_to_the_same_adapter(tiny_model, toy_data, tmp_path):
    def request(out):
        cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2, seed=7, checkpoint_every=1)
        return TrainRequest(task="classify", method="prefix", train_path=toy_data["train"], dev_path=toy_data["dev"],
                            out_dir=str(out), model=tiny_model, options=REPARAM, max_train_examples=48, config=cfg,
                            few_shot="off")

    train(request(tmp_path / "a"))  # 3 steps, one evaluation at the end: the saved prefixes come from after the resume
    with pytest.raises(Interrupt):
        train(request(tmp_path / "b"), step_callbacks=[interrupt_at(2)])
    resumed = request(tmp_path / "b")
    resumed.resume = True
    train(resumed)
    a, b = load_file(tmp_path / "a" / "adapter.safetensors"), load_file(tmp_path / "b" / "adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_llama_prefixes_have_the_key_value_heads_width():
    """Grouped-query attention: 9 query heads share 3 key/value heads of 4 channels, so a prefix is [P, 3 * 4]."""
    model = tiny_llama()
    method = create_method("prefix", {"length": "5"})
    method.inject(model)
    wrappers = [m for m in model.modules() if isinstance(m, DecoderPrefixAttention)]
    assert len(wrappers) == 2
    assert all(w.prefix_key.shape == w.prefix_value.shape == (5, 12) for w in wrappers)
    assert method.count_parameters(tiny_llama()) == 2 * 2 * 5 * 12


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_llama_prefix_equals_a_prefilled_key_value_cache(implementation):
    """Independent check: the wrapped model equals the plain model given the prefixes as a cache of P past tokens
    (the way PEFT feeds prefixes), with real tokens at positions 0..T-1, padding included."""
    from transformers import DynamicCache

    plain, wrapped = tiny_llama(), tiny_llama()
    for model in (plain, wrapped):
        model.config._attn_implementation = implementation
    torch.manual_seed(0)
    method = create_method("prefix", {"length": "3"})
    method.inject(wrapped)
    _perturb(method.trainable_parameters(wrapped))
    ids = torch.randint(100, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0  # right padding in the second row
    cache = DynamicCache(config=plain.config)
    wrappers = [m for m in wrapped.modules() if isinstance(m, DecoderPrefixAttention)]
    for layer, wrapper in enumerate(wrappers):
        cache.update(*wrapper.batch_prefixes(2, 4, torch.float32), layer)
    with torch.no_grad():
        expected = plain(input_ids=ids, attention_mask=torch.cat([torch.ones(2, 3, dtype=torch.long), mask], 1),
                         position_ids=torch.arange(7)[None], cache=cache).last_hidden_state
        got = wrapped(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert (got[real] - expected[real]).abs().max() < 1e-5


def test_llama_like_attention_with_other_parts_is_refused_with_the_reason():
    model = tiny_llama()
    for layer in model.layers:
        layer.self_attn.q_norm = torch.nn.Identity()  # as Qwen3 has: a step the wrapper would skip
    with pytest.raises(SlimtuneError, match="Llama-style causal self-attention.*has neither"):
        create_method("prefix").inject(model)


def test_bad_length_is_refused():
    with pytest.raises(SlimtuneError, match="length"):
        create_method("prefix", {"length": "0"})
