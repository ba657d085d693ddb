"""DoRA: magnitude × normalised direction; its forward is its merged weight's forward, at init the base's."""

import torch

from slimtune.methods.dora import DoRALinear
from tests.conftest import build_classifier, toy_batch


def _layers(model) -> list[DoRALinear]:
    return [m for m in model.backbone.modules() if isinstance(m, DoRALinear)]


def test_magnitude_starts_at_the_row_norms_and_the_model_at_its_base(tiny_model):
    base, _, _, backbone = build_classifier(tiny_model, "head")
    model, _, _, _ = build_classifier(tiny_model, "dora", {"r": "4"})
    for layer in _layers(model):
        assert torch.allclose(layer.magnitude, layer.base_layer.weight.norm(dim=1))
    batch = toy_batch(backbone)
    assert torch.allclose(base.eval()(**batch), model.eval()(**batch), atol=1e-6)


def test_forward_equals_the_decomposed_weight_by_hand(tiny_model):
    model, _, params, _ = build_classifier(tiny_model, "dora", {"r": "4", "alpha": "8"})
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)
    layer = _layers(model)[0]
    weight = layer.base_layer.weight + 2.0 * layer.lora_B @ layer.lora_A  # s = 8 / 4
    merged = layer.magnitude[:, None] * weight / weight.norm(dim=1, keepdim=True)
    x = torch.randn(5, layer.base_layer.in_features)
    expected = x @ merged.T + layer.base_layer.bias
    assert (layer(x) - expected).abs().max() < 1e-5
    layer.merge()
    assert (layer(x) - expected).abs().max() < 1e-5 and torch.allclose(layer.base_layer.weight, merged, atol=1e-6)


def test_the_norm_is_a_constant_in_the_backward_pass(tiny_model):
    """As the paper (§4.3) and peft: the gradient flows through B A in the numerator only."""
    model, _, _, _ = build_classifier(tiny_model, "dora", {"r": "2"})
    layer = _layers(model)[0]
    assert not layer._direction_norm().requires_grad
