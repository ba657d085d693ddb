"""attach / adapter_state / load_adapter_state: what is trainable, what is saved, and what a wrong adapter gets."""

import pytest
import torch

from slimtune.methods.adaptation import adapter_state, attach, head_parameters, load_adapter_state
from slimtune.errors import SlimtuneError
from slimtune.methods.registry import create_method
from slimtune.tasks import get_task
from tests.conftest import build_classifier


def _model(tiny_model):
    task = get_task("classify")
    return task.build_model(task.load_backbone(tiny_model), ["neg", "pos"])


def test_attach_unfreezes_exactly_the_method_and_the_head(tiny_model):
    model = _model(tiny_model)
    method = create_method("lora", {"r": "2"})
    params = attach(model, method)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if n.endswith(("lora_A", "lora_B"))} | set(
        head_parameters(model))
    assert len(params) == len(trainable)


def test_adapter_state_holds_the_method_under_backbone_and_the_head(tiny_model):
    model, method, _, _ = build_classifier(tiny_model, "lora", {"r": "2"})
    state = adapter_state(model, method)
    assert set(state) == {f"backbone.{k}" for k in method.state_dict(model.backbone)} | set(head_parameters(model))


def test_a_wrong_adapter_is_refused_in_one_line(tiny_model):
    model, method, _, _ = build_classifier(tiny_model, "lora", {"r": "2"})
    state = adapter_state(model, method)
    head = next(iter(head_parameters(model)))
    with pytest.raises(SlimtuneError, match="lacks head weights"):
        load_adapter_state(model, method, {k: v for k, v in state.items() if k != head})
    with pytest.raises(SlimtuneError, match="has shape"):
        load_adapter_state(model, method, {**state, head: torch.zeros(3, 3)})
    with pytest.raises(SlimtuneError, match="does not fit this model"):
        load_adapter_state(model, method, {k: v for k, v in state.items() if "lora_A" not in k})
    other, other_method, _, _ = build_classifier(tiny_model, "lora", {"r": "4"})
    with pytest.raises(SlimtuneError, match="does not fit this model"):
        load_adapter_state(other, other_method, state)


@pytest.mark.parametrize("method_name, options", [("subspace", {"dim": "4"}), ("subnetwork", {"density": "0.01"}),
                                                  ("lora", {"r": "2"})])
def test_integers_load_only_where_the_model_holds_integers(tiny_model, method_name, options):
    """One check for every method: an integer tensor would be copied into a float parameter without a word, but
    subnetwork's positions are integers in the model too."""
    model, method, _, _ = build_classifier(tiny_model, method_name, options)
    state = adapter_state(model, method)
    load_adapter_state(model, method, state)  # the method's own integers (if any) pass
    name = next(k for k, v in state.items() if v.is_floating_point() and k.startswith("backbone."))
    with pytest.raises(SlimtuneError, match=f"{name} holds torch.int64 values, not floating point"):
        load_adapter_state(model, method, {**state, name: state[name].round().long()})
