"""VeRA: the shared projections come from the seed and never reach the adapter file."""

import torch

from slimtune.methods.adaptation import adapter_state
from slimtune.methods.vera import VeRALinear
from tests.conftest import build_classifier


def _layers(model) -> list[VeRALinear]:
    return [m for m in model.backbone.modules() if isinstance(m, VeRALinear)]


def test_the_adapter_holds_only_vectors(tiny_model):
    model, method, _, _ = build_classifier(tiny_model, "vera", {"r": "16"})
    backbone_state = {k: v for k, v in adapter_state(model, method, export=True).items() if k.startswith("backbone.")}
    assert backbone_state and all(v.ndim == 1 for v in backbone_state.values())
    assert {k.rsplit(".", 1)[-1] for k in backbone_state} == {"vera_lambda_b", "vera_lambda_d"}
    assert not any("vera_A" in k or "vera_B" in k for k in model.state_dict())


def test_one_projection_pair_shared_and_rebuilt_from_the_seed(tiny_model):
    first, _, _, _ = build_classifier(tiny_model, "vera", {"r": "16", "seed": "3"})
    again, _, _, _ = build_classifier(tiny_model, "vera", {"r": "16", "seed": "3"})
    other, _, _, _ = build_classifier(tiny_model, "vera", {"r": "16", "seed": "4"})
    layers = _layers(first)
    assert all(layer.vera_A is layers[0].vera_A and layer.vera_B is layers[0].vera_B for layer in layers)
    assert torch.equal(layers[0].vera_A, _layers(again)[0].vera_A)
    assert not torch.equal(layers[0].vera_A, _layers(other)[0].vera_A)


def test_update_is_b_times_B_times_d_times_A(tiny_model):
    model, _, params, _ = build_classifier(tiny_model, "vera", {"r": "16"})
    layer = _layers(model)[0]
    with torch.no_grad():
        layer.vera_lambda_b.normal_()
    x = torch.randn(4, 32)
    a, b = layer.vera_A[:, :32], layer.vera_B[:32]
    expected = layer.base_layer(x) + layer.vera_lambda_b * ((layer.vera_lambda_d * (x @ a.T)) @ b.T)
    assert torch.allclose(layer(x), expected, atol=1e-6)
