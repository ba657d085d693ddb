import pytest
import torch

from slimtune.errors import SlimtuneError
from slimtune.methods.attention import HeadSliceLinear
from tests.conftest import build_classifier, toy_batch

PROJECTIONS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")
HEAD_DIM = 8  # tiny model: hidden 32, 4 heads


def test_all_heads_train_exactly_the_four_projections_in_place(tiny_model):
    model, _, _, _ = build_classifier(tiny_model, "attention")
    trained = sorted(n for n, p in model.backbone.named_parameters() if p.requires_grad)
    expected = sorted(f"encoder.layer.{i}.{proj}.{kind}" for i in range(2) for proj in PROJECTIONS
                      for kind in ("weight", "bias"))
    assert trained == expected
    assert not any(isinstance(m, HeadSliceLinear) for m in model.modules())


def _train_steps(model, params, backbone, steps=2):
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for seed in range(steps):
        batch = toy_batch(backbone, seed=seed)
        torch.nn.functional.cross_entropy(model(**batch), batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()


def test_unselected_heads_stay_bit_identical_after_training_and_merging(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "attention", {"heads": "0,2"})
    original = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if not p.requires_grad}
    _train_steps(model, params, backbone)
    method.merge(model.backbone)
    selected = torch.cat([torch.arange(0, 8), torch.arange(16, 24)])
    others = torch.cat([torch.arange(8, 16), torch.arange(24, 32)])
    for i in range(2):
        for proj in PROJECTIONS:
            name = f"encoder.layer.{i}.{proj}.base_layer"
            weight, before = model.backbone.get_submodule(name).weight, original[f"{name}.weight"]
            axis = 1 if proj.endswith("dense") else 0
            assert torch.equal(weight.index_select(axis, others), before.index_select(axis, others)), name
            assert not torch.equal(weight.index_select(axis, selected), before.index_select(axis, selected)), name
            bias, bias_before = model.backbone.get_submodule(name).bias, original[f"{name}.bias"]
            if axis == 1:
                assert torch.equal(bias, bias_before)  # the output bias mixes all heads: frozen
            else:
                assert torch.equal(bias[others], bias_before[others])
    changed = {n for n, before in original.items() if not torch.equal(model.backbone.get_parameter(n), before)}
    assert changed == {f"encoder.layer.{i}.{proj}.base_layer.{kind}" for i in range(2) for proj in PROJECTIONS
                       for kind in ("weight", "bias") if not (proj.endswith("dense") and kind == "bias")}
    method.unmerge(model.backbone)
    for name, before in original.items():
        assert torch.allclose(model.backbone.get_parameter(name), before, atol=1e-6)


def test_heads_per_block(tiny_model):
    model, method, params, _ = build_classifier(tiny_model, "attention", {"heads": "0:1;1:0,3"})
    wrappers = {n: m for n, m in model.backbone.named_modules() if isinstance(m, HeadSliceLinear)}
    assert wrappers["encoder.layer.0.attention.self.query"].channels.tolist() == list(range(8, 16))
    assert wrappers["encoder.layer.1.attention.output.dense"].channels.tolist() == list(range(0, 8)) + list(range(24, 32))
    # block 0: 1 head, block 1: 2 heads; per head: 3 x (8 x 32 rows + 8 bias) + 32 x 8 output columns
    per_head = 3 * (HEAD_DIM * 32 + HEAD_DIM) + 32 * HEAD_DIM
    assert method.count_parameters(model.backbone) == 3 * per_head
    assert sum(p.numel() for p in params) == 3 * per_head + 66


def test_heads_only_in_listed_blocks(tiny_model):
    model, _, _, _ = build_classifier(tiny_model, "attention", {"heads": "1:2"})
    trained = {n.split(".")[2] for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trained == {"1"}


@pytest.mark.parametrize("spec, message", [("0:x", "not BLOCK:HEADS"), ("a,b", "not a list of head indices"),
                                           ("4", "head 4 does not exist; this model has heads 0-3"),
                                           ("2:0", "block 2 does not exist")])
def test_bad_head_specs_are_refused(tiny_model, spec, message):
    with pytest.raises(SlimtuneError, match=message):
        build_classifier(tiny_model, "attention", {"heads": spec})
