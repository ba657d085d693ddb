"""The contract every registered method keeps on every task, present and future: no per-method code here."""

import copy

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from slimtune.methods.adaptation import adapter_state, attach, load_adapter_state
from slimtune.methods.registry import available_methods, create_method
from slimtune.models.surgery import unwrap
from slimtune.tasks import get_task
from tests.conftest import TASK_BATCHES, TASK_LABELS, TASK_MODELS, build_classifier

METHODS = sorted(available_methods())
TASKS = sorted(TASK_BATCHES)
CASES = [(task, method) for task in TASKS for method in METHODS
         if available_methods()[method].tasks is None or task in available_methods()[method].tasks]
MERGEABLE = [(task, method) for task, method in CASES if available_methods()[method].mergeable]


@pytest.fixture
def tiny_model(request, task):
    """The tiny model directory each task is tested on (an encoder, or a causal LM for causal-lm)."""
    return request.getfixturevalue(TASK_MODELS[task])


def _fresh(tiny_model, task, method_name, seed=0):
    return build_classifier(tiny_model, method_name, task=task, seed=seed)


def _train_two_steps(model, method, params, backbone, task):
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for seed in (0, 1):  # two steps: zero-initialised factors (LoRA's B) only move the others on step 2
        batch = TASK_BATCHES[task](backbone, seed=seed)
        loss = get_task(task).loss(model(**batch), batch["labels"])
        extra = method.extra_loss(model.backbone)
        (loss + extra if extra is not None else loss).backward()
        optimizer.step()
        method.on_step(model.backbone, seed + 1, 2)  # as the trainer does: the step's gradients still there
        optimizer.zero_grad()


@pytest.mark.parametrize("task,method_name", CASES)
def test_training_changes_exactly_the_trainable_parameters(tiny_model, task, method_name):
    model, method, params, backbone = _fresh(tiny_model, task, method_name)
    trainable = {id(p) for p in params}
    assert all(p.requires_grad == (id(p) in trainable) for p in model.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train_two_steps(model, method, params, backbone, task)
    for name, p in model.named_parameters():
        if id(p) in trainable:
            assert not torch.equal(p, before[name]), f"{name} is trainable but did not change"
        else:
            assert torch.equal(p, before[name]), f"{name} is frozen but changed"


@pytest.mark.parametrize("task,method_name", CASES)
def test_the_methods_formula_counts_what_training_changes(tiny_model, task, method_name):
    """The count, taken on a model no method has touched, against what two steps really moved (not the method's list)."""
    untouched = get_task(task).build_model(get_task(task).load_backbone(tiny_model), TASK_LABELS[task])
    predicted = method_count = create_method(method_name).count_parameters(untouched.backbone)
    head = sum(p.numel() for m in untouched.head_modules() for p in m.parameters())
    model, method, params, backbone = _fresh(tiny_model, task, method_name)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    _train_two_steps(model, method, params, backbone, task)
    moved = {id(p): p for p in model.parameters() if not torch.equal(p, before[id(p)])}
    assert sum(p.numel() for p in moved.values()) == predicted + head, f"formula says {method_count} + head {head}"
def _perturbed(tiny_model, task, method_name):
    model, method, params, backbone = _fresh(tiny_model, task, method_name)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval(), method, backbone


@pytest.mark.parametrize("export", [False, True], ids=["checkpoint", "exported"])
@pytest.mark.parametrize("task,method_name", CASES)
def test_saved_state_loaded_into_a_fresh_model_reproduces_logits(tiny_model, task, method_name, export):
    """The checkpoint state and the exported adapter, each through safetensors bytes, into a freshly built model."""
    model, method, backbone = _perturbed(tiny_model, task, method_name)
    batch = TASK_BATCHES[task](backbone)
    state = load_safetensors(save_safetensors(adapter_state(model, method, export=export)))
    fresh, fresh_method, _, _ = _fresh(tiny_model, task, method_name, seed=99)
    load_adapter_state(fresh, fresh_method, state)
    assert torch.equal(model(**batch), fresh.eval()(**batch))


@pytest.mark.parametrize("task,method_name", MERGEABLE)
def test_merged_outputs_equal_unmerged(tiny_model, task, method_name):
    model, method, backbone = _perturbed(tiny_model, task, method_name)
    batch = TASK_BATCHES[task](backbone)
    unmerged = model(**batch)
    merged_model = copy.deepcopy(model)
    method.merge(merged_model.backbone, restorable=False)
    assert (merged_model(**batch) - unmerged).abs().max() < 1e-5
    unwrap(merged_model.backbone)
    assert not any(hasattr(m, "base_layer") for m in merged_model.modules())
    assert (merged_model(**batch) - unmerged).abs().max() < 1e-5


@pytest.mark.parametrize("task,method_name", MERGEABLE)
def test_merge_then_unmerge_restores_the_base_exactly(tiny_model, task, method_name):
    model, method, backbone = _perturbed(tiny_model, task, method_name)
    batch = TASK_BATCHES[task](backbone)
    before_state = {n: t.clone() for n, t in model.state_dict().items()}
    before = model(**batch)
    method.merge(model.backbone)
    method.unmerge(model.backbone)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before_state[name]), f"{name} differs after merge and unmerge"
    assert torch.equal(model(**batch), before)


@pytest.mark.parametrize("task,method_name", CASES)
def test_row_updates_reproduce_the_wrapped_layer(tiny_model, task, method_name):
    """A method offering per-row updates (shared-base serving) computes its layer's output from the base's."""
    model, method, backbone = _perturbed(tiny_model, task, method_name)
    updates = method.row_updates(model.backbone)
    if updates is None:
        pytest.skip(f"{method_name} offers no per-row updates")
    assert updates
    torch.manual_seed(0)
    for path, update in updates.items():
        layer = model.backbone.get_submodule(path)
        x = torch.randn(2, 3, layer.base_layer.in_features)
        with torch.no_grad():
            expected, got = layer(x), update(x, layer.base_layer(x), layer.base_layer)
        assert (got - expected).abs().max() < 1e-5, path


@pytest.mark.parametrize("task,method_name", CASES)
def test_row_updates_built_over_a_weightless_base_match(tiny_model, task, method_name):
    """As a server builds them: the method injected into a meta-device copy of the base and loaded from the
    adapter, its per-row updates over the real base layers give the trained model's layer outputs."""
    model, method, _ = _perturbed(tiny_model, task, method_name)
    if method.row_updates(model.backbone) is None or method.reads_base_weights():
        pytest.skip(f"{method_name} is served on its own copy or built over the real base")
    weightless = get_task(task).build_model(get_task(task).load_backbone(tiny_model), TASK_LABELS[task]).backbone
    weightless.to("meta")
    built = create_method(method_name)
    built.inject(weightless)
    built.load_state_dict(weightless, {k.removeprefix("backbone."): v for k, v in adapter_state(model, method).items()
                                       if k.startswith("backbone.")})
    torch.manual_seed(0)
    for path, update in built.row_updates(weightless).items():
        layer = model.backbone.get_submodule(path)
        x = torch.randn(2, 3, layer.base_layer.in_features)
        with torch.no_grad():
            expected, got = layer(x), update(x, layer.base_layer(x), layer.base_layer)
        assert (got - expected).abs().max() < 1e-5, path
