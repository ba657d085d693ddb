import pytest
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.methods.adaptation import attach
from slimtune.methods.registry import create_method
from slimtune.models.loading import load_backbone
from slimtune.tasks import get_task
from tests.conftest import build_classifier


def test_bitfit_trains_exactly_the_linear_and_layernorm_biases(tiny_model):
    model, _, params, _ = build_classifier(tiny_model, "bitfit")
    head = {id(p) for p in model.head.parameters()}
    trained = {id(p) for p in params} - head
    biases = {id(m.bias) for m in model.backbone.modules() if isinstance(m, (nn.Linear, nn.LayerNorm))}
    assert trained == biases
    names = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert names and all(n.endswith(".bias") for n in names)
    assert any("LayerNorm" in n for n in names) and any("attention.self.query" in n for n in names)


def test_pooler_bias_is_left_to_the_head_when_the_model_pools_through_it(tiny_model):
    model = get_task("classify").build_model(load_backbone(tiny_model, pooling="pooler"), ["neg", "pos"])
    method = create_method("bitfit")
    predicted = method.count_parameters(model.backbone)
    params = attach(model, method)
    head = sum(p.numel() for m in model.head_modules() for p in m.parameters())
    assert model.backbone.pooler.dense.bias.requires_grad
    assert sum(p.numel() for p in params) == predicted + head  # the pooler is counted once, as head


def test_model_without_biases_is_refused():
    backbone = nn.Sequential(nn.Linear(4, 4, bias=False), nn.LayerNorm(4, bias=False))
    with pytest.raises(SlimtuneError, match="no bias terms"):
        create_method("bitfit").inject(backbone)

