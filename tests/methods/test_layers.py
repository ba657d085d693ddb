import pytest
import torch
from torch import nn

from slimtune.data.batching import pad_batch
from slimtune.errors import SlimtuneError
from slimtune.methods.layers import CachedBlock, block_cache
from slimtune.models.surgery import unwrap
from tests.conftest import build_classifier, make_tiny_bert, sentiment_rows


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory) -> str:
    return make_tiny_bert(tmp_path_factory.mktemp("deep-bert"), layers=4)


def _blocks(model):
    return model.backbone.encoder.layer


def test_default_trains_the_top_two_blocks(deep_model):
    model, _, params, _ = build_classifier(deep_model, "layers")
    head = {id(p) for p in model.head.parameters()}
    top = {id(p) for block in _blocks(model)[2:] for p in block.parameters()}
    assert {id(p) for p in params} - head == top


@pytest.mark.parametrize("spec, chosen", [("1-2", [1, 2]), ("0,3", [0, 3]), ("2", [2])])
def test_chosen_blocks(deep_model, spec, chosen):
    model, _, params, _ = build_classifier(deep_model, "layers", {"layers": spec})
    blocks = _blocks(model)
    assert [i for i, b in enumerate(blocks) if all(p.requires_grad for p in b.parameters())] == chosen
    assert not any(p.requires_grad for i, b in enumerate(blocks) if i not in chosen for p in b.parameters())


@pytest.mark.parametrize("spec, message", [("4", "block 4 does not exist; this model has blocks 0-3"),
                                           ("a-b", "not a block index"), ("3-1", "runs backwards")])
def test_bad_layer_specs_are_refused(deep_model, spec, message):
    with pytest.raises(SlimtuneError, match=message):
        build_classifier(deep_model, "layers", {"layers": spec})


def _batches(backbone, rows, groups):
    enc = backbone.tokenizer([t for t, _ in rows])["input_ids"]
    feats = [{"input_ids": ids, "labels": int(label == "pos")} for ids, (_, label) in zip(enc, rows)]
    return [pad_batch([feats[i] for i in group], backbone.tokenizer.pad_token_id) for group in groups]


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # block 2's inputs need no grad: the point
@pytest.mark.parametrize("cache", ["false", "true"])
def test_backward_never_runs_below_the_lowest_trained_block(deep_model, cache):
    model, _, _, backbone = build_classifier(deep_model, "layers", {"layers": "2-3", "cache": cache})
    blocks = _blocks(model)
    fired, lower_outputs = [], []
    blocks[1].register_full_backward_hook(lambda *_: fired.append("block 1"))
    blocks[2].register_full_backward_hook(lambda *_: fired.append("block 2"))
    blocks[1].register_forward_hook(lambda _m, _i, out: lower_outputs.append(out))
    for batch in _batches(backbone, sentiment_rows(4, 0), [[0, 1, 2, 3]] * 2):  # 2nd pass is a hit when cached
        nn.functional.cross_entropy(model(**batch), batch["labels"]).backward()
    assert fired == ["block 2", "block 2"]
    assert not any(out.requires_grad for out in lower_outputs)


def _without_dropout(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def _train(model, params, epochs):
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for batches in epochs:
        for batch in batches:
            nn.functional.cross_entropy(model(**batch), batch["labels"]).backward()
            optimizer.step()
            optimizer.zero_grad()


def test_cached_training_equals_uncached_and_hits_from_the_second_epoch(deep_model):
    rows = sentiment_rows(12, 0)
    results = {}
    for cache in ("false", "true"):
        model, _, params, backbone = build_classifier(deep_model, "layers", {"layers": "2-3", "cache": cache})
        _without_dropout(model).train()
        # reshuffled batches in epoch 2: other companions, other padding, same examples
        first = _batches(backbone, rows, [range(0, 6), range(6, 12)])
        second = _batches(backbone, rows, [range(0, 12, 2), range(1, 12, 2)])
        lowest_runs = []
        lowest = _blocks(model)[0]
        getattr(lowest, "base_layer", lowest).register_forward_hook(lambda *_: lowest_runs.append(1))
        _train(model, params, [first])
        runs_in_first = len(lowest_runs)
        _train(model, params, [second])
        results[cache] = (model, runs_in_first, len(lowest_runs) - runs_in_first)
    cached, plain = results["true"][0], results["false"][0]
    for (name, p), q in zip(cached.named_parameters(), plain.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name
    stats = block_cache(cached.backbone)
    assert (stats.misses, stats.hits) == (12, 12)
    assert len(stats.rows) == 12
    assert results["true"][1:] == (2, 0)  # block 0 ran on both batches of epoch 1, never in epoch 2
    assert results["false"][1:] == (2, 2)
    batch = _batches(backbone, rows, [range(12)])[0]
    assert torch.allclose(cached.eval()(**batch), plain.eval()(**batch), atol=1e-5)


def test_cached_blocks_stay_in_eval_mode_and_the_cache_respects_its_bound(deep_model):
    model, _, _, backbone = build_classifier(deep_model, "layers", {"layers": "3", "cache": "true",
                                                                    "cache_mb": "0.004"})
    model.train()
    rows = sentiment_rows(12, 0)
    with torch.no_grad():
        model(**_batches(backbone, rows, [range(12)])[0])
    blocks = _blocks(model)
    assert [isinstance(b, CachedBlock) for b in blocks] == [True, True, True, False]
    assert not any(b.base_layer.training for b in blocks[:3]) and blocks[3].training
    assert not model.backbone.embeddings.training
    stats = block_cache(model.backbone)
    assert 0 < len(stats.rows) < 12 and stats.used_bytes <= 0.004 * 2**20


def test_unwrapped_model_runs_without_the_cache(deep_model):
    model, method, _, backbone = build_classifier(deep_model, "layers", {"layers": "3", "cache": "true"})
    batch = _batches(backbone, sentiment_rows(6, 0), [range(6)])[0]
    model.eval()
    with torch.no_grad():
        before = model(**batch)
        method.merge(model.backbone)
        unwrap(model.backbone)
        assert not any(hasattr(m, "base_layer") for m in model.modules())
        assert torch.allclose(model(**batch), before, atol=1e-6)
        model.train()
        model(**batch)
    assert all(block.training for block in _blocks(model))  # the cache no longer holds them in eval mode
