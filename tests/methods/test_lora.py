import pytest
import torch

from slimtune.errors import SlimtuneError
from slimtune.methods.lora import LoRALinear
from tests.conftest import build_classifier, toy_batch


def test_lora_at_init_equals_base(tiny_model):
    base, _, _, backbone = build_classifier(tiny_model, "head")
    lora, _, _, _ = build_classifier(tiny_model, "lora", {"r": "4"})
    batch = toy_batch(backbone)
    base.eval(), lora.eval()
    assert torch.equal(base(**batch), lora(**batch))


def test_lora_wraps_default_targets_keeping_base_layer(tiny_model):
    model, method, params, _ = build_classifier(tiny_model, "lora")
    wrapped = [n for n, m in model.backbone.named_modules() if isinstance(m, LoRALinear)]
    assert sorted(n.rsplit(".", 1)[-1] for n in wrapped) == ["query", "query", "value", "value"]
    assert all(isinstance(model.backbone.get_submodule(n).base_layer, torch.nn.Linear) for n in wrapped)
    # 2 layers x 2 targets x (A: 8x32 + B: 32x8) + head 32*2+2
    assert sum(p.numel() for p in params) == 2 * 2 * (8 * 32 + 32 * 8) + 66


def test_merge_equals_unmerged_and_unmerge_restores(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "lora", {"targets": "query,key,value,dense"})
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)
    batch = toy_batch(backbone)
    model.eval()
    before = model(**batch)
    weight_before = model.backbone.encoder.layer[0].attention.self.query.base_layer.weight.clone()
    method.merge(model.backbone)
    assert (model(**batch) - before).abs().max() < 1e-5
    method.unmerge(model.backbone)
    assert torch.equal(model.backbone.encoder.layer[0].attention.self.query.base_layer.weight, weight_before)
    assert torch.equal(model(**batch), before)


def test_eval_mode_does_not_merge(tiny_model):
    """`.eval()` and a forward pass leave the base weights as they were: merging is only ever an explicit call."""
    model, method, params, backbone = build_classifier(tiny_model, "lora")
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)
    layers = [m for m in model.backbone.modules() if isinstance(m, LoRALinear)]
    weights = [layer.base_layer.weight.clone() for layer in layers]
    model.eval()
    model(**toy_batch(backbone))
    assert all(torch.equal(layer.base_layer.weight, w) for layer, w in zip(layers, weights))


def test_unmatched_target_lists_module_names(tiny_model):
    with pytest.raises(SlimtuneError, match="match no linear layer.*query"):
        build_classifier(tiny_model, "lora", {"targets": "q_proj"})


def test_bad_rank_is_refused(tiny_model):
    with pytest.raises(SlimtuneError, match="rank"):
        build_classifier(tiny_model, "lora", {"r": "0"})
