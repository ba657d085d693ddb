"""Dynamic int8: every encoder linear layer quantized, outputs within a stated tolerance of fp32.

Tolerance: on the tiny model (logits of order 1), int8 logits differ from fp32 by at
most INT8_TOLERANCE, about 1% of the logit scale; the measured gap is near 3e-4.
"""

import pytest
import torch
from torch import nn

from slimtune.errors import SlimtuneError
from slimtune.models.int8_inference import quantize_int8, quantize_loaded
from slimtune.models.loading import fingerprint, load_backbone
from slimtune.runs.adapter_files import load_adapter, run_config, save_adapter
from slimtune.tasks import get_task
from tests.conftest import build_classifier, toy_batch

INT8_TOLERANCE = 1e-2


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


@pytest.fixture
def lora_run(tiny_model, tmp_path):
    """A LoRA run directory with a non-zero update, so merging matters."""
    model, method, _, backbone = build_classifier(tiny_model, "lora", {"r": "4"})
    base_fingerprint = fingerprint(load_backbone(tiny_model).model)  # as `train` takes it, pooler included
    torch.manual_seed(1)
    with torch.no_grad():
        for p in method.trainable_parameters(model.backbone):
            p.normal_(0, 0.2)
    config = run_config(get_task("classify"), method, tiny_model, base_fingerprint, backbone, ["neg", "pos"])
    save_adapter(tmp_path / "run", model, method, config)
    return tmp_path / "run", _logits(model, toy_batch(backbone)), toy_batch(backbone)


def test_int8_logits_stay_within_tolerance_of_fp32(lora_run):
    run, fp32_logits, batch = lora_run
    loaded = load_adapter(run, quantize="int8")
    int8_logits = _logits(loaded.model, batch)
    gap = (int8_logits - fp32_logits).abs().max()
    assert 0 < gap < INT8_TOLERANCE
    assert torch.equal(int8_logits.argmax(-1), fp32_logits.argmax(-1))


def test_merged_encoder_has_only_int8_linears_and_an_fp32_head(lora_run):
    loaded = load_adapter(lora_run[0], quantize="int8")
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert not [n for n, m in loaded.model.backbone.named_modules() if type(m) is nn.Linear]
    assert len([m for m in loaded.model.backbone.modules() if isinstance(m, dynamic)]) == 2 * 6  # the pooler is dropped under mean pooling
    assert type(loaded.model.head[-1]) is nn.Linear


def test_layers_inside_unmergeable_wrappers_stay_fp32(tiny_model):
    model, _, _, backbone = build_classifier(tiny_model, "adapter")
    batch = toy_batch(backbone)
    expected = _logits(model, batch)
    names = quantize_int8(model.backbone)
    assert names and not any(".base_layer" in n or ".down" in n or ".up" in n for n in names)
    assert (_logits(model, batch) - expected).abs().max() < INT8_TOLERANCE


def test_unknown_scheme_is_an_error(lora_run):
    loaded = load_adapter(lora_run[0])
    with pytest.raises(SlimtuneError, match="unknown int8 inference scheme 'int4'"):
        quantize_loaded(loaded, "int4")
