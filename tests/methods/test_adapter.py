import pytest
import torch

from slimtune.errors import SlimtuneError
from slimtune.methods.adapter import BottleneckAdapter, output_projections
from slimtune.methods.registry import create_method
from tests.conftest import build_classifier, tiny_llama, toy_batch


@pytest.mark.parametrize("options", [{}, {"placement": "pfeiffer", "activation": "gelu", "size": "4"}])
def test_adapter_at_init_equals_base_exactly(tiny_model, options):
    base, _, _, backbone = build_classifier(tiny_model, "head")
    adapted, _, _, _ = build_classifier(tiny_model, "adapter", options)
    batch = toy_batch(backbone)
    base.eval(), adapted.eval()
    assert torch.equal(base(**batch), adapted(**batch))


def _wrapped(model) -> list[str]:
    return [n for n, m in model.backbone.named_modules() if isinstance(m, BottleneckAdapter)]


def test_houlsby_wraps_attention_and_feed_forward_outputs_keeping_base_layer(tiny_model):
    model, _, params, _ = build_classifier(tiny_model, "adapter", {"size": "8"})
    assert _wrapped(model) == [f"encoder.layer.{i}.{part}" for i in (0, 1) for part in ("attention.output.dense", "output.dense")]
    assert all(isinstance(model.backbone.get_submodule(n).base_layer, torch.nn.Linear) for n in _wrapped(model))
    # 2 layers x 2 adapters x (down 32*8+8, up 8*32+32) + head 32*2+2
    assert sum(p.numel() for p in params) == 4 * (32 * 8 + 8 + 8 * 32 + 32) + 66


def test_pfeiffer_wraps_feed_forward_outputs_only(tiny_model):
    model, _, _, _ = build_classifier(tiny_model, "adapter", {"placement": "pfeiffer"})
    assert _wrapped(model) == ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]


def test_trained_adapter_changes_outputs_but_not_their_length(tiny_model):
    model, _, params, backbone = build_classifier(tiny_model, "adapter")
    batch = toy_batch(backbone)
    before = model.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)
    after = model.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert after.shape == before.shape and not torch.allclose(after, before)


def test_llama_style_projections_are_found_by_structure():
    assert output_projections(tiny_llama(), "houlsby") == [
        f"layers.{i}.{n}" for i in (0, 1) for n in ("self_attn.o_proj", "mlp.down_proj")
    ]


@pytest.mark.parametrize("options, message", [({"placement": "middle"}, "placement"),
                                              ({"activation": "tanh"}, "activation"), ({"size": "0"}, "size")])
def test_bad_options_are_refused(options, message):
    with pytest.raises(SlimtuneError, match=message):
        create_method("adapter", options)
