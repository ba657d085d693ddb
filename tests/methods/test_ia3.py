"""IA3: what it wraps by default, and what each vector scales."""

import torch

from slimtune.methods.ia3 import ScaledLinear
from tests.conftest import build_classifier


def _wrapped(model) -> dict[str, ScaledLinear]:
    return {n: m for n, m in model.backbone.named_modules() if isinstance(m, ScaledLinear)}


def test_keys_values_and_the_feed_forward_input_by_default(tiny_model, tiny_lm):
    bert = _wrapped(build_classifier(tiny_model, "ia3")[0])
    assert sorted((n.split(".", 3)[-1], m.on_input) for n, m in bert.items() if ".0." in n) == [
        ("attention.self.key", False), ("attention.self.value", False), ("output.dense", True)]
    llama = _wrapped(build_classifier(tiny_lm, "ia3", task="causal-lm")[0])
    assert sorted((n.rsplit(".", 1)[-1], m.on_input) for n, m in llama.items() if ".0." in n) == [
        ("down_proj", True), ("k_proj", False), ("v_proj", False)]


def test_output_scaling_includes_the_bias_and_input_scaling_does_not(tiny_model):
    wrapped = _wrapped(build_classifier(tiny_model, "ia3")[0])
    x = torch.randn(3, 64)
    for layer in wrapped.values():
        with torch.no_grad():
            layer.ia3_l.copy_(torch.rand_like(layer.ia3_l) + 0.5)
        base, scale = layer.base_layer, layer.ia3_l
        x = torch.randn(3, base.in_features)
        expected = base(x * scale) if layer.on_input else (x @ base.weight.T + base.bias) * scale
        assert torch.allclose(layer(x), expected, atol=1e-6)
