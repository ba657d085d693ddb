"""Generation on an int8 frozen base dequantises each weight once per `generate` call, not once per token,
and decodes exactly the tokens the per-call path decodes."""

import contextlib

import torch

from slimtune.models import int8_base
from slimtune.models.int8_base import Int8Linear, dequantized_weights, quantize_frozen_linears
from slimtune.runs.adapter_files import load_base_model
from slimtune.tasks.generation import GenerationOptions, generate_ids


def _count_dequantising_matmuls(monkeypatch) -> list[int]:
    calls = [0]
    original = int8_base._Int8MatMul.apply

    def counted(*args):
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(int8_base._Int8MatMul, "apply", counted)
    return calls


def test_generate_on_an_int8_base_dequantises_once_and_decodes_the_same_tokens(tiny_lm, monkeypatch):
    loaded = load_base_model("causal-lm", tiny_lm, quantize="int8")
    layers = [m for m in loaded.model.modules() if isinstance(m, Int8Linear)]
    assert layers
    prompts = [[5, 6, 7, 8], [9, 10]]
    options = GenerationOptions(max_new_tokens=6)
    calls = _count_dequantising_matmuls(monkeypatch)
    cached = generate_ids(loaded.model, prompts, options)
    assert calls[0] == 0  # every projection used the copy made on entry
    assert all(layer.cached_weight is None for layer in layers)  # dropped on exit

    monkeypatch.setattr("slimtune.tasks.generation.dequantized_weights", lambda root: contextlib.nullcontext())
    per_token = generate_ids(loaded.model, prompts, options)
    assert calls[0] > 0
    assert cached == per_token


def test_cached_weights_give_the_layer_its_own_outputs():
    torch.manual_seed(0)
    layer = Int8Linear(torch.nn.Linear(12, 8))
    x = torch.randn(3, 12)
    expected = layer(x)
    with dequantized_weights(layer):
        torch.testing.assert_close(layer(x), expected)
    assert layer.cached_weight is None

