"""The base-weights fingerprint is computed once per model directory and kept by file identity, never stale."""

import json
import os

import pytest
import torch

from slimtune.models import loading
from slimtune.models.loading import fingerprint, load_backbone, weights_digest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fingerprints.json"


def _no_hashing(monkeypatch):
    def refuse(model):
        raise AssertionError("hashed the weights again")

    monkeypatch.setattr(loading, "weights_digest", refuse)


def test_the_second_load_reads_the_kept_fingerprint(tiny_model, cache, monkeypatch):
    first = load_backbone(tiny_model).model
    expected = weights_digest(first)
    assert fingerprint(first) == expected and len(json.loads(cache.read_text())) == 1
    again = load_backbone(tiny_model).model
    _no_hashing(monkeypatch)
    assert fingerprint(again) == expected


def test_weights_changed_in_memory_are_hashed_afresh(tiny_model, cache):
    model = load_backbone(tiny_model).model
    kept = fingerprint(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert fingerprint(model) == weights_digest(model) != kept


def test_a_rewritten_weights_file_is_a_new_identity(tiny_model, cache, monkeypatch, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    kept = fingerprint(load_backbone(str(copy)).model)
    weights = next(copy.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    calls = []
    real = loading.weights_digest
    monkeypatch.setattr(loading, "weights_digest", lambda model: calls.append(1) or real(model))
    assert fingerprint(load_backbone(str(copy)).model) == kept and calls == [1]
    assert len(json.loads(cache.read_text())) == 2


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"a": 3}'])
def test_a_broken_cache_is_ignored_and_rewritten(tiny_model, cache, content):
    cache.parent.mkdir(parents=True)
    cache.write_text(content)
    model = load_backbone(tiny_model).model
    assert fingerprint(model) == weights_digest(model)
    assert list(json.loads(cache.read_text()).values()) == [weights_digest(model)]
