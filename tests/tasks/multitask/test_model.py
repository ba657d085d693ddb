import pytest
import torch

from slimtune.errors import SlimtuneError
from slimtune.methods.registry import create_method
from slimtune.models.int8_base import Int8Linear, quantize_frozen_linears
from slimtune.models.loading import load_backbone
from slimtune.tasks import get_task
from slimtune.tasks.multitask.model import MultiTaskModel, PerTaskMethods, attach_all
from slimtune.tasks.multitask.objective import LossWeights, MultiTask
from tests.conftest import TASK_LABELS, toy_batch, toy_token_batch

TASKS = {"sst": "classify", "ner": "ner"}


def build(tiny_model, sharing, method="lora", pooling=None, loss_weights="learned", kinds=None):
    kinds = kinds or TASKS
    backbone = load_backbone(tiny_model, pooling=pooling)
    tasks = {name: get_task(kind) for name, kind in kinds.items()}
    labels = {name: TASK_LABELS[kind] for name, kind in kinds.items()}
    torch.manual_seed(0)
    weights = LossWeights(list(kinds), loss_weights)
    model = MultiTaskModel(backbone, tasks, labels, sharing, weights)
    if sharing == "shared":
        m = create_method(method, {})
    else:
        m = PerTaskMethods({name: create_method(method, {}) for name in kinds})
    return model, m, attach_all(model, m, tasks), backbone, MultiTask(tasks, weights)


def batches(backbone):
    return {"sst": {**toy_batch(backbone), "task": "sst"}, "ner": {**toy_token_batch(backbone), "task": "ner"}}


def test_per_task_copies_share_the_frozen_base_and_keep_their_own_adapters(tiny_model):
    model, method, params, backbone, objective = build(tiny_model, "per-task")
    sst, ner = model.backbone["sst"], model.backbone["ner"]
    assert sst is not ner
    query = "encoder.layer.0.attention.self.query"
    assert sst.get_submodule(query).base_layer.weight is ner.get_submodule(query).base_layer.weight
    assert sst.get_submodule(query).lora_A is not ner.get_submodule(query).lora_A
    base = sum(p.numel() for n, p in backbone.model.named_parameters() if not n.startswith("pooler."))  # unused
    assert sum(p.numel() for p in model.parameters()) == base + sum(p.numel() for p in params)
    data = batches(backbone)
    objective.batch_loss(model(**data["sst"]), data["sst"]).backward()
    grads = {name: [p.grad for p in m.trainable_parameters(model.backbone[name])] for name, m in method.methods.items()}
    assert all(g is not None for g in grads["sst"]) and all(g is None for g in grads["ner"])
    assert set(method.state_dict(model.backbone)) == {f"{name}.{k}" for name in TASKS
                                                      for k in create_method("lora", {}).state_dict(sst)}


def test_one_step_on_one_task_leaves_the_other_tasks_output_alone(tiny_model):
    for sharing, changes in (("per-task", False), ("shared", True)):
        model, _, params, backbone, objective = build(tiny_model, sharing)
        model.eval()  # no dropout: outputs compare exactly
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p) * 0.1)
        data = batches(backbone)
        ner_before = model(**data["ner"]).detach().clone()
        optimizer = torch.optim.SGD(params, lr=0.5)
        objective.batch_loss(model(**data["sst"]), data["sst"]).backward()
        optimizer.step()
        assert (not torch.equal(model(**data["ner"]), ner_before)) == changes, sharing


def test_learned_loss_weighting_is_uncertainty_weighting(tiny_model):
    model, _, params, backbone, objective = build(tiny_model, "shared")
    assert any(p is model.loss_weights.log_vars for p in params)
    with torch.no_grad():
        model.loss_weights.log_vars.copy_(torch.tensor([0.5, -1.0]))
    data = batches(backbone)["ner"]
    logits = model(**data)
    raw = objective.tasks["ner"].loss(logits, data["labels"])
    assert torch.allclose(objective.batch_loss(logits, data), torch.exp(torch.tensor(1.0)) * raw - 1.0)
    fixed = LossWeights(["sst", "ner"], "fixed", {"ner": 0.25})
    assert torch.allclose(fixed("ner", raw), 0.25 * raw) and fixed.weights() == {"sst": 1.0, "ner": 0.25}
    assert not list(fixed.parameters())


def test_per_task_refuses_methods_that_train_base_weights(tiny_model):
    with pytest.raises(SlimtuneError, match="bitfit trains the base's own weights"):
        build(tiny_model, "per-task", method="bitfit")
    build(tiny_model, "shared", method="bitfit")  # one set of biases for all tasks is fine


def test_pooler_pooling_is_refused(tiny_model):
    with pytest.raises(SlimtuneError, match="pooler"):
        build(tiny_model, "shared", pooling="pooler")


def test_methods_that_cannot_serve_a_task_or_replace_the_encoder_are_refused(tiny_model):
    with pytest.raises(SlimtuneError, match="serves only task classify, not ner"):
        build(tiny_model, "shared", method="features")
    for sharing in ("shared", "per-task"):
        with pytest.raises(SlimtuneError, match="replaces the whole encoder"):
            build(tiny_model, sharing, method="features", kinds={"a": "classify", "b": "classify"})


def test_per_task_copies_share_one_int8_base(tiny_model):
    model, _, params, backbone, objective = build(tiny_model, "per-task")
    quantize_frozen_linears(model.backbone)
    query = "encoder.layer.0.attention.self.query.base_layer"
    sst, ner = model.backbone["sst"].get_submodule(query), model.backbone["ner"].get_submodule(query)
    assert isinstance(sst, Int8Linear) and sst is ner
    data = batches(backbone)["ner"]
    objective.batch_loss(model(**data), data).backward()  # the adapters still train on top
    assert all(p.grad is not None for p in model.backbone["ner"].parameters() if p.requires_grad)
