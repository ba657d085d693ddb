"""The contract every registered method keeps on every task, present and future: no per-method code here."""

import copy

import pytest
import torch

from slimtune.methods.adaptation import adapter_state, attach, load_adapter_state
from slimtune.methods.registry import available_methods, create_method
from slimtune.models.surgery import unwrap
from slimtune.tasks import get_task
from tests.conftest import TASK_BATCHES, TASK_LABELS, TASK_MODELS, build_classifier

METHODS = sorted(available_methods())
TASKS = sorted(TASK_BATCHES)
CASES = [(task, method) for task in TASKS for method in METHODS
         if (available_methods()[method].tasks is None or task in available_methods()[method].tasks)
         and method not in get_task(task).unsupported_methods]
MERGEABLE = [(task, method) for task, method in CASES if available_methods()[method].mergeable]


@pytest.fixture
def tiny_model(request, task):
    """The tiny model directory each task is tested on (an encoder, or a causal LM for causal-lm)."""
    return request.getfixturevalue(TASK_MODELS[task])


def _fresh(tiny_model, task, method_name, seed=0):
    return build_classifier(tiny_model, method_name, task=task, seed=seed)


@pytest.mark.parametrize("task,method_name", CASES)
def test_trainable_parameters_match_the_methods_formula(tiny_model, task, method_name):
    model = get_task(task).build_model(get_task(task).load_backbone(tiny_model), TASK_LABELS[task])
    method = create_method(method_name)
    predicted = method.count_parameters(model.backbone)
    params = attach(model, method)
    head = sum(p.numel() for m in model.head_modules() for p in m.parameters())
    assert sum(p.numel() for p in params) == predicted + head
    trainable = {id(p) for p in params}
    assert all(p.requires_grad == (id(p) in trainable) for p in model.parameters())


@pytest.mark.parametrize("task,method_name", CASES)
def test_training_changes_exactly_the_trainable_parameters(tiny_model, task, method_name):
    model, method, params, backbone = _fresh(tiny_model, task, method_name)
    trainable = {id(p) for p in params}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for seed in (0, 1):  # two steps: zero-initialised factors (LoRA's B) only move the others on step 2
        batch = TASK_BATCHES[task](backbone, seed=seed)
        loss = get_task(task).loss(model(**batch), batch["labels"])
        extra = method.extra_loss(model.backbone)
        (loss + extra if extra is not None else loss).backward()
        optimizer.step()
        method.on_step(model.backbone, seed + 1, 2)  # as the trainer does: the step's gradients still there
        optimizer.zero_grad()
    for name, p in model.named_parameters():
        if id(p) in trainable:
            assert not torch.equal(p, before[name]), f"{name} is trainable but did not change"
        else:
            assert torch.equal(p, before[name]), f"{name} is frozen but changed"


def _perturbed(tiny_model, task, method_name):
    model, method, params, backbone = _fresh(tiny_model, task, method_name)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval(), method, backbone


@pytest.mark.parametrize("task,method_name", CASES)
def test_save_then_load_reproduces_logits(tiny_model, task, method_name):
    model, method, backbone = _perturbed(tiny_model, task, method_name)
    batch = TASK_BATCHES[task](backbone)
    state = adapter_state(model, method)
    fresh, fresh_method, _, _ = _fresh(tiny_model, task, method_name, seed=99)
    load_adapter_state(fresh, fresh_method, state)
    assert torch.equal(model(**batch), fresh.eval()(**batch))


@pytest.mark.parametrize("task,method_name", MERGEABLE)
def test_merged_outputs_equal_unmerged(tiny_model, task, method_name):
    model, method, backbone = _perturbed(tiny_model, task, method_name)
    batch = TASK_BATCHES[task](backbone)
    unmerged = model(**batch)
    merged_model = copy.deepcopy(model)
    method.merge(merged_model.backbone)
    assert (merged_model(**batch) - unmerged).abs().max() < 1e-5
    unwrap(merged_model.backbone)
    assert not any(hasattr(m, "base_layer") for m in merged_model.modules())
    assert (merged_model(**batch) - unmerged).abs().max() < 1e-5
