import json

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from transformers import BertModel

from slimtune.data.batching import pad_batch
from slimtune.errors import SlimtuneError
from slimtune.methods.feature_reducers import fit_lda, fit_pca, fit_tfidf, lda_model, tfidf_vectors
from slimtune.methods.features import FeatureBackbone, features_dir
from slimtune.methods.registry import create_method
from slimtune.runs.adapter_files import load_adapter
from slimtune.runs.train import TrainRequest, train
from slimtune.tasks import get_task
from slimtune.training.config import TrainConfig
from tests.conftest import build_classifier, sentiment_rows, toy_batch


@pytest.fixture(autouse=True)
def feature_cache(slimtune_cache):
    return slimtune_cache / "features"


@pytest.fixture
def encoder_calls(monkeypatch):
    """Counts calls of the (BERT) encoder's forward."""
    calls = []
    original = BertModel.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BertModel, "forward", counted)
    return calls


def _batches(backbone, rows, size=16):
    encoded = backbone.tokenizer([text for text, _ in rows])["input_ids"]
    features = [{"input_ids": ids, "labels": int(label == "pos")} for ids, (_, label) in zip(encoded, rows)]
    return [pad_batch(features[i:i + size], backbone.tokenizer.pad_token_id) for i in range(0, len(features), size)]


def _standardised(z):
    return (z - z.mean(0)) / z.std(0)


def test_low_rank_head_shapes_and_parameter_count(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "features", {"dim": "8", "rank": "3"})
    assert isinstance(model.backbone, FeatureBackbone)
    assert model.backbone.low_rank.V.shape == (8, 3) and model.backbone.low_rank.U.shape == (32, 3)
    assert model.backbone.proj.shape == (8, 32) and model.backbone.offset.shape == (8,)
    assert method.count_parameters(model.backbone) == 3 * (8 + 32)
    batch = toy_batch(backbone)
    assert model(**batch).shape == (6, 2)


def test_projections_reproduce_sklearn_transforms():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 12)) @ rng.normal(size=(12, 12))
    labels = rng.integers(0, 3, size=60)
    pca = fit_pca(x, 5)
    ours = x @ pca["proj"].double().numpy().T + pca["offset"].double().numpy()
    np.testing.assert_allclose(ours, _standardised(PCA(5, svd_solver="full").fit_transform(x)), atol=1e-4)
    lda = fit_lda(x, labels, 5)  # three classes: two directions, the other three rows are zero
    ours = x @ lda["proj"].double().numpy().T + lda["offset"].double().numpy()
    expected = _standardised(lda_model(x, labels, 5).transform(x))
    np.testing.assert_allclose(ours[:, :2], expected, atol=1e-4)
    assert not lda["proj"][2:].any()


def test_tfidf_vectors_equal_sklearns_and_feed_the_svd():
    documents = [[2, 7, 7, 9, 3], [2, 8, 9, 3], [2, 7, 11, 3], [2, 8, 8, 8, 12, 3]]
    fitted = fit_tfidf(documents, 2)
    reference = TfidfVectorizer(analyzer=lambda d: d).fit(documents)
    width = max(map(len, documents))
    ids = torch.tensor([d + [0] * (width - len(d)) for d in documents])
    mask = torch.tensor([[1] * len(d) + [0] * (width - len(d)) for d in documents])
    ours = tfidf_vectors(ids, mask, fitted["terms"], fitted["idf"])
    expected = reference.transform(documents).toarray()[:, [reference.vocabulary_[int(t)] for t in fitted["terms"]]]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-6)
    svd = TruncatedSVD(2, random_state=0).fit_transform(reference.transform(documents))
    z = ours @ fitted["proj"].T + fitted["offset"]
    np.testing.assert_allclose(np.abs(z.numpy()), np.abs(_standardised(svd)), atol=1e-4)


def test_training_features_are_cached_on_disk_reused_and_invalidated(tiny_model, feature_cache, encoder_calls):
    model, method, _, backbone = build_classifier(tiny_model, "features", {"dim": "8", "rank": "2"})
    batches = _batches(backbone, sentiment_rows(40, 0))
    method.prepare(model, iter(batches), None)
    assert len(encoder_calls) == len(batches)
    (cache_file,) = feature_cache.iterdir()
    written = cache_file.stat().st_mtime_ns

    encoder_calls.clear()
    again, again_method, _, _ = build_classifier(tiny_model, "features", {"dim": "8", "rank": "2"})
    again_method.prepare(again, iter(batches[::-1]), None)  # same examples, other order: the same cache entry
    assert encoder_calls == [] and cache_file.stat().st_mtime_ns == written
    assert torch.allclose(again.backbone.proj, model.backbone.proj, atol=1e-5)

    cache_file.write_bytes(b"not safetensors")  # an unreadable entry is recomputed and replaced
    encoder_calls.clear()
    build_classifier(tiny_model, "features", {"dim": "8", "rank": "2"})[1].prepare(again, iter(batches), None)
    assert len(encoder_calls) == len(batches) and cache_file.stat().st_size > 100

    encoder_calls.clear()
    changed = _batches(backbone, sentiment_rows(40, 1))
    build_classifier(tiny_model, "features", {"dim": "8", "rank": "2"})[1].prepare(again, iter(changed), None)
    assert len(encoder_calls) == len(changed)
    assert len(list(feature_cache.iterdir())) == 2
    assert features_dir() == feature_cache


def test_after_prepare_only_unseen_inputs_run_the_encoder(tiny_model, encoder_calls):
    model, method, _, backbone = build_classifier(tiny_model, "features", {"dim": "8", "rank": "2"})
    batches = _batches(backbone, sentiment_rows(40, 0))
    method.prepare(model, iter(batches), None)
    encoder_calls.clear()
    for batch in batches[::-1]:  # a training epoch
        model(**batch).sum().backward()
    assert encoder_calls == []
    unseen = toy_batch(backbone, seed=7)
    model(**unseen)
    model(**unseen)  # kept after its first pass
    assert len(encoder_calls) == 1


def _train(data, out, reducer, epochs=4, dim=16):
    return train(TrainRequest(task="classify", method="features", train_path=data["train"], dev_path=data["dev"],
                               out_dir=str(out), model=data["model"], options={"reducer": reducer, "dim": str(dim)},
                               config=TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, patience=0)))


@pytest.mark.parametrize("reducer", ["pca", "lda", "tfidf"])
def test_each_reducer_trains_and_its_adapter_reproduces_the_dev_score(tiny_model, toy_data, tmp_path, reducer):
    # tfidf keeps every toy term (about 30): truncated SVD to fewer directions keeps the frequent filler words
    summary = _train({**toy_data, "model": tiny_model}, tmp_path / "run", reducer, dim=32 if reducer == "tfidf" else 16)
    loaded = load_adapter(tmp_path / "run")
    task = get_task("classify")
    dev = task.encode(task.read(toy_data["dev"]), loaded.backbone.tokenizer, loaded.labels, loaded.backbone.max_length)
    metrics = task.evaluate(loaded.model, dev, loaded.backbone.tokenizer.pad_token_id, 64, loaded.labels)
    assert metrics["accuracy"] == summary["best_dev_accuracy"]
    assert json.loads((tmp_path / "run" / "adapter_config.json").read_text())["options"]["reducer"] == reducer
    if reducer == "tfidf":  # the sentiment words decide the toy labels: a lexical model must find them
        assert summary["best_dev_accuracy"] >= 0.9


def test_tfidf_never_runs_the_encoder(tiny_model, toy_data, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the encoder ran")

    monkeypatch.setattr(BertModel, "forward", refuse)
    _train({**toy_data, "model": tiny_model}, tmp_path / "run", "tfidf", epochs=1)
    loaded = load_adapter(tmp_path / "run")
    assert loaded.task.predict(loaded, ["a great film", "a dull plot"], batch_size=8)[0]["label"] in ("neg", "pos")


def test_tfidf_before_fitting_is_an_error(tiny_model):
    model, _, _, backbone = build_classifier(tiny_model, "features", {"reducer": "tfidf"})
    with pytest.raises(SlimtuneError, match="tfidf has no vocabulary"):
        model(**toy_batch(backbone))


def test_ner_is_refused_with_the_reason(tiny_model, toy_ner_data, tmp_path):
    request = TrainRequest(task="ner", method="features", train_path=toy_ner_data["train"], out_dir=str(tmp_path / "out"),
                           model=tiny_model)
    with pytest.raises(SlimtuneError, match="features serves only task classify, not ner: .*one vector per text"):
        train(request)


@pytest.mark.parametrize("options,message", [
    ({"reducer": "svd"}, "reducer must be one of pca, lda, tfidf"),
    ({"pooling": "max"}, "pooling must be one of mean, cls"),
    ({"dim": "4", "rank": "8"}, "rank 8 above dim 4"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(SlimtuneError, match=message):
        create_method("features", options)
