"""A --model directory from outside: malformed configs, truncated weights and pickles are refused, never unpickled."""

import pickle
import shutil

import pytest

from tests.reliability.conftest import train_args


class PlantedPayload:
    """Unpickling this would create the file named in `marker`: the proof a pickle was (not) executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    return copy


def _set_config(model, **values):
    import json

    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **values}))


def _truncate(path, keep: float):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damage, words", [
    (lambda m: (m / "config.json").write_text("{not json"), "config.json"),
    (lambda m: (m / "config.json").write_bytes(b"\xff\xfe{}"), "not UTF-8"),
    (lambda m: (m / "config.json").write_text("null"), "JSON object"),
    (lambda m: (m / "config.json").write_text("[" * 100_000 + "]" * 100_000), "nested"),
    (lambda m: (m / "config.json").write_text('{"model_type": "bert", "hidden_size": "big"}'), "cannot load model"),
    (lambda m: (m / "config.json").unlink(), "no config.json"),
    (lambda m: _set_config(m, hidden_size=400_000, intermediate_size=1_000_000), "cannot load model"),
    (lambda m: _truncate(m / "model.safetensors", 0.5), "cannot load model"),
    (lambda m: _truncate(m / "model.safetensors", 0.0001), "cannot load model"),
    (lambda m: ((m / "1_Pooling").mkdir(), (m / "1_Pooling" / "config.json").write_text("{oops")), "1_Pooling"),
    (lambda m: ((m / "1_Pooling").mkdir(), (m / "1_Pooling" / "config.json").write_text("[]")), "1_Pooling"),
])
def test_broken_model_directory_is_refused(refuses, model_copy, toy_files, tmp_path, damage, words):
    damage(model_copy)
    out = tmp_path / "out"
    assert words in refuses(train_args(str(model_copy), toy_files["train"], out), out=out)
    assert not out.exists()


def test_pickle_weights_are_refused_and_never_executed(refuses, model_copy, toy_files, tmp_path):
    marker = tmp_path / "pwned"
    (model_copy / "model.safetensors").unlink()
    (model_copy / "pytorch_model.bin").write_bytes(pickle.dumps(PlantedPayload(str(marker))))
    line = refuses(train_args(str(model_copy), toy_files["train"], tmp_path / "out"), out=tmp_path / "out")
    assert "pytorch_model.bin" in line and "safetensors" in line
    assert not marker.exists()


def test_pickle_beside_safetensors_is_ignored(model_copy, toy_files, tmp_path):
    """With both present, transformers could prefer either; slimtune asks for safetensors only."""
    from slimtune.models.loading import load_backbone

    marker = tmp_path / "pwned"
    (model_copy / "pytorch_model.bin").write_bytes(pickle.dumps(PlantedPayload(str(marker))))
    load_backbone(str(model_copy))
    assert not marker.exists()
