import copy

import pytest
import scipy.linalg
import torch
from safetensors.torch import load_file

from slimtune.methods.adaptation import adapter_state, load_adapter_state
from slimtune.runs.adapter_files import save_adapter
from slimtune.errors import SlimtuneError
from slimtune.methods.projections import (FastfoodProjection, SparseProjection, hadamard_transform,
                                          sylvester_hadamard)
from slimtune.methods.subspace import SubspaceLinear
from tests.conftest import build_classifier, toy_batch

# 2 blocks x 6 linears of the tiny BERT (rank 32 each): svd needs 12 <= dim <= 384
OPTIONS = {"fastfood": {"dim": "300"}, "sparse": {"dim": "300"}, "svd": {"projection": "svd", "dim": "60"}}
OPTIONS["sparse"]["projection"] = "sparse"


def _wrappers(model) -> dict[str, SubspaceLinear]:
    return {n: m for n, m in model.backbone.named_modules() if isinstance(m, SubspaceLinear)}


def _alpha(method, model) -> torch.nn.Parameter:
    (alpha,) = method.trainable_parameters(model.backbone)
    return alpha


def _step(model, params, backbone, lr=1e-2):
    optimizer = torch.optim.AdamW(params, lr=lr)
    batch = toy_batch(backbone)
    torch.nn.functional.cross_entropy(model(**batch), batch["labels"]).backward()
    optimizer.step()
    optimizer.zero_grad()


@pytest.mark.parametrize("projection", sorted(OPTIONS))
def test_alpha_zero_is_exactly_the_base_model(tiny_model, projection):
    base, _, _, backbone = build_classifier(tiny_model, "head")
    model, method, _, _ = build_classifier(tiny_model, "subspace", OPTIONS[projection])
    assert not _alpha(method, model).any()
    batch = toy_batch(backbone)
    assert torch.equal(base.eval()(**batch), model.eval()(**batch))


@pytest.mark.parametrize("projection", sorted(OPTIONS))
def test_only_alpha_trains_and_one_alpha_serves_every_matrix(tiny_model, projection):
    model, method, params, backbone = build_classifier(tiny_model, "subspace", OPTIONS[projection])
    layers = _wrappers(model)
    assert len(layers) == 2 * 6  # every linear of both blocks
    alpha = _alpha(method, model)
    assert all(layer.alpha is alpha for layer in layers.values())
    assert {id(p) for p in params} == {id(alpha)} | {id(p) for p in model.head.parameters()}
    weights = {n: layer.base_layer.weight.clone() for n, layer in layers.items()}
    _step(model, params, backbone)
    assert alpha.count_nonzero() == alpha.numel()
    assert all(torch.equal(layer.base_layer.weight, weights[n]) for n, layer in layers.items())
    assert all(layer.delta_weight().abs().sum() > 0 for layer in layers.values())


def test_adapter_file_holds_alpha_and_head_and_the_seed_lives_in_the_options(tiny_model, tmp_path):
    model, method, params, backbone = build_classifier(tiny_model, "subspace", {"seed": "7"})
    _step(model, params, backbone)
    state = load_file(save_adapter(tmp_path, model, method, {}))
    assert set(state) == {"backbone.alpha", "head.1.weight", "head.1.bias"}
    assert state["backbone.alpha"].shape == (1000,)
    assert method.options_dict()["seed"] == 7


@pytest.mark.parametrize("projection", sorted(OPTIONS))
def test_a_fresh_base_rebuilds_the_projection_from_the_options(tiny_model, projection):
    model, method, params, backbone = build_classifier(tiny_model, "subspace", OPTIONS[projection])
    _step(model, params, backbone, lr=0.1)
    state = adapter_state(model, method)
    batch = toy_batch(backbone, seed=4)
    fresh, fresh_method, _, _ = build_classifier(tiny_model, "subspace", OPTIONS[projection], seed=5)
    load_adapter_state(fresh, fresh_method, state)
    assert torch.equal(model.eval()(**batch), fresh.eval()(**batch))
    if projection != "svd":  # svd has no seed: its basis comes from W₀
        other, other_method, _, _ = build_classifier(tiny_model, "subspace", {**OPTIONS[projection], "seed": "1"})
        load_adapter_state(other, other_method, state)
        assert not torch.allclose(model(**batch), other.eval()(**batch))


@pytest.mark.parametrize("projection", sorted(OPTIONS))
def test_merge_folds_theta0_plus_p_alpha_into_the_weights(tiny_model, projection):
    model, method, params, backbone = build_classifier(tiny_model, "subspace", OPTIONS[projection])
    with torch.no_grad():
        _alpha(method, model).normal_(0, 0.5)
    model.eval()
    batch = toy_batch(backbone)
    before = model(**batch)
    original = {n: layer.base_layer.weight.clone() for n, layer in _wrappers(model).items()}
    merged = copy.deepcopy(model)
    method.merge(merged.backbone)
    assert (merged(**batch) - before).abs().max() < 1e-5
    for name, layer in _wrappers(merged).items():
        expected = original[name] + _wrappers(model)[name].delta_weight()
        assert torch.allclose(layer.base_layer.weight, expected, atol=1e-6)
    method.unmerge(merged.backbone)
    assert all((layer.base_layer.weight - original[n]).abs().max() < 1e-6 for n, layer in _wrappers(merged).items())


def test_svd_shifts_each_matrix_top_singular_values_by_its_slice_of_alpha(tiny_model):
    model, method, _, _ = build_classifier(tiny_model, "subspace", {"projection": "svd", "dim": "60", "scale": "2"})
    alpha = _alpha(method, model)
    with torch.no_grad():
        alpha.copy_(torch.linspace(0.01, 0.6, 60))
    for i, layer in enumerate(_wrappers(model).values()):  # 60 over 12 matrices: 5 each, in order
        weight = layer.base_layer.weight.double()
        shifted = torch.linalg.svdvals(weight + layer.delta_weight().double())
        expected = torch.linalg.svdvals(weight)
        expected[:5] += 2 * alpha[5 * i: 5 * i + 5].double()
        assert torch.allclose(shifted, expected.sort(descending=True).values, atol=1e-4)


def test_hadamard_transform_matches_scipy():
    for length in (2, 8, 32, 64, 2048):
        x = torch.randn(3, length, dtype=torch.float64)
        expected = x @ torch.tensor(scipy.linalg.hadamard(length), dtype=torch.float64)
        assert torch.allclose(hadamard_transform(x, sylvester_hadamard(16)), expected)


@pytest.mark.parametrize("build, tolerance", [(FastfoodProjection, 0.01), (SparseProjection, 0.15)])
def test_random_projections_have_unit_norm_columns_over_all_matrices(build, tolerance):
    generator = torch.Generator().manual_seed(0)
    sizes, dim = (1024, 3072, 4096), 96
    projections = [build(size, dim, sum(sizes), generator) for size in sizes]
    columns = torch.eye(dim)  # P [D, d] built column by column, for the test only
    p = torch.cat([torch.stack([proj(e) for e in columns], 1) for proj in projections])
    assert p.shape == (sum(sizes), dim)
    assert (p.norm(dim=0).mean() - 1).abs() < tolerance
    assert (p.T @ p - torch.eye(dim)).abs().max() < 0.5  # nearly orthogonal: a random subspace


@pytest.mark.parametrize("options, message", [
    ({"projection": "dense"}, "projection must be one of"),
    ({"dim": "0"}, "dim must be at least 1"),
    ({"scale": "0"}, "scale must be positive"),
    ({"projection": "svd", "dim": "1000"}, "dim must be between 12 and 384"),
    ({"targets": "pooler"}, "match no linear layer"),
])
def test_bad_options_are_refused(tiny_model, options, message):
    with pytest.raises(SlimtuneError, match=message):
        build_classifier(tiny_model, "subspace", options)


def test_targets_restrict_the_wrapped_layers(tiny_model):
    model, method, _, _ = build_classifier(tiny_model, "subspace", {"targets": "query,value"})
    assert sorted(n.rsplit(".", 1)[-1] for n in _wrappers(model)) == ["query", "query", "value", "value"]
    assert method.count_parameters(model.backbone) == 1000
