"""Rows of different adapters in one shared base pass give what each adapter gives alone."""

import pytest
import torch

from slimtune.models.inference import feature_outputs
from slimtune.runs.adapter_files import load_adapter
from slimtune.serve.engine import Engine, Job
from slimtune.serve.registry import AdapterRegistry
from slimtune.serve.served import OWN, SHARED, AdapterRefused
from tests.conftest import sentiment_rows
from tests.serve.conftest import make_adapter

TEXTS = [text for text, _ in sentiment_rows(5, 7)] + ["bob marley is of new york , and anna of paris", "a"]


@pytest.fixture(scope="module")
def registry(tiny_model, adapter_dirs):
    registry = AdapterRegistry(tiny_model)
    for name, directory in adapter_dirs.items():
        adapter = registry.prepare(name, directory)
        registry.install(adapter)
        registry.register(adapter)
    return registry


def alone(directory: str, texts: list[str]) -> list[torch.Tensor]:
    """Logits per feature from the adapter loaded by itself, the way `slimtune predict` runs it."""
    loaded = load_adapter(directory)
    features = loaded.task.encode_texts(texts, loaded.backbone.tokenizer, loaded.backbone.max_length)
    return feature_outputs(loaded.model, features, loaded.backbone.tokenizer.pad_token_id, batch_size=4)


def jobs_for(registry, names: list[str]) -> list[Job]:
    """One job per adapter, each over its own slice of TEXTS, so rows of all adapters interleave in one batch."""
    jobs = []
    for i, name in enumerate(names):
        adapter = registry.get(name)
        texts = TEXTS[i % 3 :] if i % 2 else TEXTS[: len(TEXTS) - i]
        jobs.append(Job(adapter, adapter.task.encode_texts(texts, registry.base.tokenizer, adapter.max_length)))
    return jobs


@pytest.mark.parametrize("mixed,spread", [(True, float("inf")), (False, float("inf")), (True, 1.5), (False, 1.5)])
def test_mixed_batch_equals_each_adapter_alone(registry, adapter_dirs, mixed, spread):
    assert [registry.get(n).serving for n in adapter_dirs] == [SHARED, SHARED, SHARED, OWN]
    passes = []
    engine = Engine(registry, max_rows=64, mixed=mixed, spread=spread,
                    on_pass=lambda rows, adapters: passes.append(adapters))
    names = list(adapter_dirs)
    jobs = jobs_for(registry, names)
    results = engine.run(jobs)
    if spread == float("inf"):  # mixed: all shared rows in one pass, then the prefix copy; else one pass each
        assert passes == ([3, 1] if mixed else [1, 1, 1, 1])
    else:  # passes cut by length: more of them, still mixing adapters when mixed
        assert len(passes) > 4 and (max(passes) > 1) == mixed
    for name, i, job, result in zip(names, range(len(names)), jobs, results):
        texts = TEXTS[i % 3 :] if i % 2 else TEXTS[: len(TEXTS) - i]
        expected = alone(adapter_dirs[name], texts)
        assert len(result) == len(expected) == len(job.features)
        for got, want in zip(result, expected):
            assert got.shape == want.shape
            assert (got - want).abs().max() < 1e-5, name


def test_a_delta_really_applies_per_row(registry, adapter_dirs):
    """Two LoRA adapters over the same rows differ, and each differs from the bare base."""
    engine = Engine(registry, max_rows=8)
    features = registry.get("sst-qv").task.encode_texts(TEXTS[:3], registry.base.tokenizer, 128)
    qv, dense = engine.run([Job(registry.get("sst-qv"), features), Job(registry.get("sst-dense"), features)])
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(qv, dense))


def test_chunks_and_unloading_leave_others_unchanged(tiny_model, adapter_dirs):
    registry = AdapterRegistry(tiny_model)
    for name in ("sst-qv", "sst-dense", "ner-qv"):
        adapter = registry.prepare(name, adapter_dirs[name])
        registry.install(adapter)
        registry.register(adapter)
    registry.uninstall(registry.unregister("sst-qv"))  # frees slot 0; slot 1 and 2 stay
    engine = Engine(registry, max_rows=3)
    jobs = jobs_for(registry, ["sst-dense", "ner-qv"])
    results = engine.run(jobs)
    assert all(len(r) == len(j.features) for r, j in zip(results, jobs))
    for name, i, result in (("sst-dense", 0, results[0]), ("ner-qv", 1, results[1])):
        texts = TEXTS[i % 3 :] if i % 2 else TEXTS[: len(TEXTS) - i]
        assert max((g - w).abs().max() for g, w in zip(result, alone(adapter_dirs[name], texts))) < 1e-5
    readded = registry.prepare("again", adapter_dirs["sst-qv"])
    registry.install(readded)
    assert readded.slot == 0


def test_merged_single_adapter_equals_unmerged(tiny_model, adapter_dirs):
    registry = AdapterRegistry(tiny_model)
    merged = registry.prepare("m", adapter_dirs["sst-qv"], merge=True)
    engine = Engine(registry, max_rows=8)
    features = merged.task.encode_texts(TEXTS, registry.base.tokenizer, merged.max_length)
    (result,) = engine.run([Job(merged, features)])
    assert max((g - w).abs().max() for g, w in zip(result, alone(adapter_dirs["sst-qv"], TEXTS))) < 1e-5
    with pytest.raises(AdapterRefused, match="prefix cannot be merged"):
        registry.prepare("b", adapter_dirs["sst-prefix"], merge=True)


def test_pooler_pooled_lora_gets_its_own_copy(tiny_model, tmp_path):
    run = make_adapter(tmp_path / "pooler", tiny_model, "classify", "lora", {"r": "2"}, seed=5, pooling="pooler")
    registry = AdapterRegistry(tiny_model)
    adapter = registry.prepare("p", run)
    assert adapter.serving == OWN
    engine = Engine(registry, max_rows=8)
    features = adapter.task.encode_texts(TEXTS, registry.base.tokenizer, adapter.max_length)
    (result,) = engine.run([Job(adapter, features)])
    assert max((g - w).abs().max() for g, w in zip(result, alone(run, TEXTS))) < 1e-5


def test_adapter_of_another_base_is_refused(tiny_model, other_tiny_model, tmp_path):
    run = make_adapter(tmp_path / "other", other_tiny_model, "classify", "lora", {}, seed=0)
    with pytest.raises(AdapterRefused, match="trained on another base model"):
        AdapterRegistry(tiny_model).prepare("x", run)


def test_rows_of_one_adapter_need_not_be_contiguous():
    """Slots interleaved across the batch (as in a generation lane) take the index_select path: each row gets its
    own adapter's LoRA update, a row of the bare base none."""
    from slimtune.methods.lora import LoRALinear
    from slimtune.serve.multi_adapter import BASE_SLOT, MultiAdapterLayer, RowGroups, group_rows

    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    loras = [LoRALinear(base, rank, 4.0, 0.0) for rank in (2, 3)]
    for lora in loras:
        torch.nn.init.normal_(lora.lora_B)
    rows = RowGroups()
    layer = MultiAdapterLayer(base, rows)
    layer.updates = {0: loras[0].row_update, 1: loras[1].row_update}
    slots = [1, 0, BASE_SLOT, 1, 0]
    assert [(s, i if isinstance(i, slice) else i.tolist()) for s, i in group_rows(slots)] == [
        (1, [0, 3]), (0, [1, 4]), (BASE_SLOT, slice(2, 3))]
    x = torch.randn(5, 4, 6)
    with torch.no_grad(), rows.use(slots):
        got = layer(x)
        want = torch.stack([base(x[i]) if s == BASE_SLOT else loras[s](x[i]) for i, s in enumerate(slots)])
    assert (got - want).abs().max() < 1e-6
    assert torch.equal(got[2], base(x[2])) and (got[0] - base(x[0])).abs().max() > 1e-3
