"""adapter_config.json and adapter.safetensors from outside: checked once, on read, before any tensor is allocated."""

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimtune.errors import SlimtuneError
from slimtune.runs.run_directory import read_run

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A writable copy of the trained run, to break."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def _edit(run, **changes):
    config = json.loads((run / "adapter_config.json").read_text())
    config.update(changes)
    (run / "adapter_config.json").write_text(json.dumps(config))


def test_the_trained_run_reads_as_a_typed_description(trained_run):
    run = read_run(trained_run)
    assert run.config.method == "lora" and run.config.labels == ["neg", "pos"] and run.config.options["r"] == 2
    assert run.view().config is run.config and not run.is_multi
    assert run.tensor_shapes and all(isinstance(s, tuple) for s in run.tensor_shapes.values())


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c,
                                                                                         max_size=3), max_leaves=10)
FIELDS = ["task", "method", "options", "labels", "max_length", "pooling", "base_fingerprint", "tasks", "sharing",
          "quantize", "base_quantize", "scheme"]


@SETTINGS
@given(value=json_values)
def test_any_json_value_as_the_whole_config_is_refused(run_copy, value):
    (run_copy / "adapter_config.json").write_text(json.dumps(value))
    with pytest.raises(SlimtuneError):
        read_run(run_copy)


@SETTINGS
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_any_value_in_any_field_is_read_or_refused(run_copy, field, value):
    """A field set to anything: either a valid config still (and the typed view agrees) or one clear refusal."""
    _edit(run_copy, **{field: value})
    try:
        run = read_run(run_copy)
    except SlimtuneError as e:
        assert "\n" not in str(e)
        return
    assert run.config.task in ("classify", "ner", "causal-lm", "multi")


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_bytes_as_config_are_refused(run_copy, data):
    (run_copy / "adapter_config.json").write_bytes(data)
    with pytest.raises(SlimtuneError):
        read_run(run_copy)


@pytest.mark.parametrize("content, words", [
    (b"null", "expected a JSON object"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"task": "classify", "\xff": 1}', "not UTF-8"),
    (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
])
def test_config_that_is_not_an_object_is_refused_by_every_reader(refuses, run_copy, content, words):
    (run_copy / "adapter_config.json").write_bytes(content)
    for argv in (["inspect", run_copy], ["predict", "--adapter", run_copy, "good"],
                 ["merge", "--adapter", run_copy, "--out", run_copy.parent / "merged"]):
        assert words in refuses(argv)
    assert not (run_copy.parent / "merged").exists()


@pytest.mark.parametrize("changes, words", [
    ({"labels": [1, 2]}, "labels.0"),
    ({"labels": ["pos", "pos"]}, "unique"),
    ({"labels": None}, "labels"),
    ({"labels": []}, "needs at least one label"),
    ({"task": "causal-lm", "labels": []}, "pooling: a causal-lm run pools nothing"),
    ({"max_length": -1}, "max_length"),
    ({"max_length": 3.5}, "max_length"),
    ({"max_length": True}, "max_length"),
    ({"method": "nonsense"}, "unknown method"),
    ({"task": "translate"}, "unknown task"),
    ({"options": {"r": 2, "alpha": "nan"}}, "finite"),
    ({"options": {"r": -4}}, "rank"),
    ({"options": {"r": 2, "bogus": 1}}, "unknown option"),
    ({"options": {"r": {"nested": 1}}}, "options.r"),
    ({"pooling": "max"}, "pooling"),
    ({"base_fingerprint": 7}, "base_fingerprint"),
    ({"quantize": "int4"}, "quantize"),
])
def test_malformed_fields_are_refused_naming_them(refuses, run_copy, changes, words):
    _edit(run_copy, **changes)
    assert words in refuses(["eval", "--adapter", run_copy, "--data", run_copy / "none.tsv"])


def test_huge_rank_is_refused_before_allocating(run_copy, monkeypatch):
    """r=100000 on the tiny base would allocate ~100 MB of LoRA factors (7.7 GB on MiniLM); the method's own
    count over the base's shapes refuses it before the task model is built or the method attached."""
    import slimtune.runs.run_loader as loader
    from slimtune.runs.adapter_files import load_adapter

    def never(*args, **kwargs):
        raise AssertionError("allocated before refusing")

    _edit(run_copy, options={"r": 100_000, "alpha": 16.0, "dropout": 0.0, "targets": ["query", "value"]})
    monkeypatch.setattr(loader, "attach", never)
    monkeypatch.setattr(loader.get_task("classify").__class__, "build_model", never)
    with pytest.raises(SlimtuneError, match="more than the base model's"):
        load_adapter(run_copy)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "other_shapes"])
def test_damaged_adapter_file_is_refused(refuses, run_copy, damage):
    weights = run_copy / "adapter.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "garbage":
        weights.write_bytes(b"\x89PNG not safetensors at all")
    elif damage == "missing":
        weights.unlink()
    else:
        _edit(run_copy, options={"r": 3, "alpha": 16.0, "dropout": 0.0, "targets": ["query", "value"]})
    assert "adapter.safetensors" in refuses(["predict", "--adapter", run_copy, "good film"])
    if damage != "other_shapes":  # inspect reads no model, so options that do not fit the tensors are not its concern
        assert "adapter.safetensors" in refuses(["inspect", run_copy])


@pytest.mark.parametrize("damage, words", [
    ("nan", "holds NaN or infinite values"), ("inf", "holds NaN or infinite values"),
    ("integer", "values, not floating point"), ("integer head", "values, not floating point")])
def test_tensors_that_would_compute_garbage_are_refused(refuses, run_copy, damage, words):
    """Well-formed files whose values cannot be weights: every answer through a NaN is NaN, and an integer tensor
    would be cast into a float parameter without a word."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = run_copy / "adapter.safetensors"
    state = load_file(weights)
    name = sorted(state)[-1 if damage == "integer head" else 0]  # a LoRA factor, or the head's weight
    state[name] = {"nan": torch.full_like(state[name], float("nan")), "inf": torch.full_like(state[name], float("inf"))
                   }.get(damage, state[name].round().to(torch.int64))
    save_file(state, weights)
    assert words in refuses(["predict", "--adapter", run_copy, "good film"])
    if not damage.startswith("integer"):
        assert words in refuses(["merge", "--adapter", run_copy, "--out", run_copy.parent / "merged"])


def test_multi_task_run_gives_one_checked_view_per_task(run_copy):
    config = json.loads((run_copy / "adapter_config.json").read_text())
    labels = config.pop("labels")
    config.update(task="multi", sharing="shared", tasks={"sst": {"task": "classify", "labels": labels}})
    (run_copy / "adapter_config.json").write_text(json.dumps(config))
    run = read_run(run_copy)
    view = run.view("sst")
    assert run.task_names == ["sst"] and view.config.task == "classify" and view.labels == labels
    assert view.data["task_name"] == "sst"
    for wrong in (None, "other"):
        with pytest.raises(SlimtuneError, match="--task-name|no task"):
            run.view(wrong)
    config["tasks"]["sst"]["labels"] = [None]
    (run_copy / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(SlimtuneError, match="tasks.sst.labels.0"):
        read_run(run_copy)
