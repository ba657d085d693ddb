"""LoRA's options: rsLoRA's scale and the initialisations (PiSSA, OLoRA exact at the start; Gaussian's spread)."""

import math

import pytest
import torch

from slimtune.methods.adaptation import adapter_state, load_adapter_state
from slimtune.errors import SlimtuneError
from slimtune.methods.lora import LoRALinear
from tests.conftest import build_classifier, toy_batch


def _layers(model) -> list[LoRALinear]:
    return [m for m in model.backbone.modules() if isinstance(m, LoRALinear)]


def test_rslora_scales_by_alpha_over_the_root_of_the_rank(tiny_model):
    model, _, _, _ = build_classifier(tiny_model, "lora", {"r": "4", "alpha": "8", "use_rslora": "true"})
    layer = _layers(model)[0]
    assert layer.scaling == 8 / math.sqrt(4) == 4.0
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, layer.base_layer.in_features)
    expected = layer.base_layer(x) + 4.0 * (x @ layer.lora_A.T @ layer.lora_B.T)
    assert torch.allclose(layer(x), expected, atol=1e-6)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_principal_initialisations_reproduce_the_base_exactly(tiny_model, init):
    base, _, _, backbone = build_classifier(tiny_model, "head")
    model, _, _, _ = build_classifier(tiny_model, "lora", {"r": "4", "init": init, "targets": "query,value,dense"})
    batch = toy_batch(backbone)
    assert all(layer.lora_B.abs().sum() > 0 for layer in _layers(model))  # B is not zero: the principal part
    assert torch.equal(base.eval()(**batch), model.eval()(**batch))


def test_pissa_starts_from_the_top_singular_triplets(tiny_model):
    model, _, _, _ = build_classifier(tiny_model, "lora", {"r": "3", "alpha": "6", "init": "pissa"})
    layer = _layers(model)[0]
    u, s, vh = torch.linalg.svd(layer.base_layer.weight.double())
    principal = (u[:, :3] * s[:3]) @ vh[:3]
    assert torch.allclose(layer.scaling * (layer.lora_B @ layer.lora_A).double(), principal, atol=1e-5)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_principal_adapters_save_load_merge_and_unmerge(tiny_model, init):
    options = {"r": "4", "init": init}
    model, method, params, backbone = build_classifier(tiny_model, "lora", options)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.05)
    batch = toy_batch(backbone)
    model.eval()
    before = model(**batch)
    fresh, fresh_method, _, _ = build_classifier(tiny_model, "lora", options, seed=5)
    load_adapter_state(fresh, fresh_method, adapter_state(model, method, export=True))
    assert torch.equal(fresh.eval()(**batch), before)
    weights = [layer.base_layer.weight.clone() for layer in _layers(model)]
    method.merge(model.backbone)
    assert (model(**batch) - before).abs().max() < 1e-5
    method.unmerge(model.backbone)
    assert all(torch.equal(layer.base_layer.weight, w) for layer, w in zip(_layers(model), weights))


def test_gaussian_init_draws_a_with_spread_one_over_r(tiny_model):
    torch.manual_seed(0)
    model, _, _, _ = build_classifier(tiny_model, "lora", {"r": "8", "init": "gaussian", "targets": ".*"})
    values = torch.cat([layer.lora_A.flatten() for layer in _layers(model)])
    assert abs(values.std().item() - 1 / 8) < 0.01 and all(layer.lora_B.abs().sum() == 0 for layer in _layers(model))


def test_an_unknown_init_is_refused(tiny_model):
    with pytest.raises(SlimtuneError, match="init must be one of"):
        build_classifier(tiny_model, "lora", {"init": "svd"})
