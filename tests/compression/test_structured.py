"""Structured pruning on the tiny BERT: smaller matrices, the same function as masking, and a clean reload."""

import pytest
import torch

from slimtune.compression.importance import gates, gradient_importance, head_mask_gates, magnitude_importance
from slimtune.compression.structured import choose_lowest, prune_structure
from slimtune.errors import SlimtuneError
from slimtune.models.loading import load_backbone
from slimtune.models.pruned_layout import LAYOUT_KEY, encoder_parts
from tests.conftest import build_classifier, toy_batch

REMOVED_HEADS = [[1, 3], [0]]
REMOVED_NEURONS = [[0, 5, 63], []]


def _hidden(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state


def test_removing_k_heads_shrinks_matrices_by_k_head_dims_and_equals_masking_them(tiny_model):
    backbone = load_backbone(tiny_model)
    model, batch = backbone.model.eval(), toy_batch(backbone)
    parts = encoder_parts(model)
    d = parts[0].head_dim
    shapes = [{name: tuple(p.layer(name).weight.shape) for name in ("query", "key", "value", "attention_out")}
              for p in parts]
    ones = [torch.ones(p.num_neurons) for p in parts]
    with gates(model, head_mask_gates(parts, REMOVED_HEADS), ones):
        masked = _hidden(model, batch)

    prune_structure(model, REMOVED_HEADS, [[], []])
    for p, removed, before in zip(encoder_parts(model), REMOVED_HEADS, shapes):
        k = len(removed)
        for name in ("query", "key", "value"):
            assert tuple(p.layer(name).weight.shape) == (before[name][0] - k * d, before[name][1])
            assert p.layer(name).bias.shape == (before[name][0] - k * d,)
        assert tuple(p.layer("attention_out").weight.shape) == (before["attention_out"][0],
                                                                 before["attention_out"][1] - k * d)
    torch.testing.assert_close(_hidden(model, batch), masked, atol=1e-5, rtol=0)
    assert not torch.allclose(masked, _hidden(load_backbone(tiny_model).model.eval(), batch), atol=1e-3)


def test_removing_neurons_equals_zeroing_their_activations(tiny_model):
    backbone = load_backbone(tiny_model)
    model, batch = backbone.model.eval(), toy_batch(backbone)
    parts = encoder_parts(model)
    neuron_gates = []
    for p, removed in zip(parts, REMOVED_NEURONS):
        gate = torch.ones(p.num_neurons)
        gate[removed] = 0
        neuron_gates.append(gate)
    with gates(model, [torch.ones(p.num_heads) for p in parts], neuron_gates):
        masked = _hidden(model, batch)
    prune_structure(model, [[], []], REMOVED_NEURONS)
    assert [p.num_neurons for p in encoder_parts(model)] == [61, 64]
    torch.testing.assert_close(_hidden(model, batch), masked, atol=1e-5, rtol=0)


def test_pruned_directory_reloads_with_its_layout(tiny_model, tmp_path):
    backbone = load_backbone(tiny_model)
    model, batch = backbone.model.eval(), toy_batch(backbone)
    prune_structure(model, REMOVED_HEADS, REMOVED_NEURONS)
    expected = _hidden(model, batch)
    model.save_pretrained(tmp_path)
    backbone.tokenizer.save_pretrained(tmp_path)
    reloaded = load_backbone(str(tmp_path)).model
    assert getattr(reloaded.config, LAYOUT_KEY) == {"attention_heads": [2, 3], "intermediate_sizes": [61, 64]}
    torch.testing.assert_close(_hidden(reloaded, batch), expected, atol=1e-6, rtol=0)


def test_choose_lowest_keeps_one_unit_per_layer_and_splits_evenly_per_layer():
    scores = [torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.9, 0.05, 0.8])]
    assert choose_lowest(scores, 3, "global", "heads") == [[0, 1], [1]]
    assert choose_lowest(scores, 4, "global", "heads") == [[0, 1], [1, 2]]
    assert choose_lowest(scores, 2, "layer", "heads") == [[0], [1]]
    with pytest.raises(SlimtuneError, match="between 0 and 4 heads"):
        choose_lowest(scores, 5, "global", "heads")
    with pytest.raises(SlimtuneError, match="not a multiple of 2"):
        choose_lowest(scores, 3, "layer", "heads")


def test_importance_scores_every_head_and_neuron(tiny_model):
    model, _, _, backbone = build_classifier(tiny_model, "head")
    heads, neurons = gradient_importance(model, _task(), [toy_batch(backbone, seed=s) for s in range(2)])
    assert [h.shape[0] for h in heads] == [4, 4] and [n.shape[0] for n in neurons] == [64, 64]
    assert all((h > 0).all() and torch.isclose(h.norm(), torch.tensor(1.0)) for h in heads)
    assert all((n >= 0).all() and (n > 0).any() for n in neurons)
    data_free_heads, _ = magnitude_importance(backbone.model)
    assert [h.shape[0] for h in data_free_heads] == [4, 4]


def _task():
    from slimtune.tasks import get_task

    return get_task("classify")


def test_other_architectures_get_a_clear_error():
    from tests.conftest import tiny_llama

    with pytest.raises(SlimtuneError, match="needs a BERT-style encoder"):
        encoder_parts(tiny_llama())
