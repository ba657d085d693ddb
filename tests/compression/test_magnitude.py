"""Magnitude pruning zeroes exactly the requested share of the blocks' linear weights, smallest first."""

import pytest
import torch

from slimtune.compression.magnitude import magnitude_prune, prunable_linears
from slimtune.errors import SlimtuneError
from slimtune.models.loading import load_backbone


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.77])
def test_global_sparsity_is_exact_and_removes_the_smallest_weights(tiny_model, sparsity):
    model = load_backbone(tiny_model).model
    layers = prunable_linears(model)
    before = torch.cat([layer.weight.detach().abs().flatten() for layer in layers.values()])
    biases = [layer.bias.clone() for layer in layers.values()]
    embeddings = model.embeddings.word_embeddings.weight.clone()
    stats = magnitude_prune(model, sparsity, "global")
    after = torch.cat([layer.weight.detach().flatten() for layer in layers.values()])
    zeroed = after == 0
    assert int(zeroed.sum()) == round(sparsity * before.numel()) == stats["pruned_weights"]
    assert before[zeroed].max() <= before[~zeroed].min()
    assert all(torch.equal(b, layer.bias) for b, layer in zip(biases, layers.values()))
    assert torch.equal(embeddings, model.embeddings.word_embeddings.weight)


def test_per_layer_sparsity_is_exact_in_every_layer(tiny_model):
    model = load_backbone(tiny_model).model
    magnitude_prune(model, 0.4, "layer")
    for name, layer in prunable_linears(model).items():
        assert int((layer.weight == 0).sum()) == round(0.4 * layer.weight.numel()), name


def test_ties_still_give_the_exact_count():
    from torch import nn

    model = nn.Module()
    model.layer = nn.ModuleList([nn.Sequential(nn.Linear(4, 5)) for _ in range(2)])
    model.config = None
    with torch.no_grad():
        for block in model.layer:
            block[0].weight.fill_(0.5)  # every weight ties
    stats = magnitude_prune(model, 0.35, "global")
    assert stats["pruned_weights"] == 14


def test_prunable_layers_are_the_blocks_linears_only(tiny_model):
    names = list(prunable_linears(load_backbone(tiny_model).model))
    assert len(names) == 2 * 6 and all(n.startswith("encoder.layer.") for n in names)


def test_bad_sparsity_is_an_error(tiny_model):
    with pytest.raises(SlimtuneError, match=r"\[0, 1\)"):
        magnitude_prune(load_backbone(tiny_model).model, 1.0)
