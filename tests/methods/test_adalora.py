import copy
import warnings

import pytest
import torch
from safetensors.torch import load_file

from slimtune.errors import SlimtuneError
from slimtune.methods.adalora import SVDLoRALinear
from slimtune.methods.adalora_view import final_ranks
from slimtune.methods.adaptation import adapter_state, load_adapter_state
from slimtune.methods.rank_budget import BudgetSchedule
from slimtune.runs.train import TrainRequest, train
from slimtune.training.config import TrainConfig
from tests.conftest import Interrupt, build_classifier, interrupt_at, toy_batch

OPTIONS = {"r": "4", "target_rank": "2", "tinit": "0.2", "tfinal": "0.3"}  # 4 matrices: budget 16 → 8


def _wrappers(model) -> dict[str, SVDLoRALinear]:
    return {n: m for n, m in model.backbone.named_modules() if isinstance(m, SVDLoRALinear)}


def _train(model, method, params, backbone, steps: int, total: int | None = None, lr: float = 1e-2):
    """Steps like the trainer's: backward with the extra loss, optimizer step, on_step, zero_grad; yields after each."""
    optimizer = torch.optim.AdamW(params, lr=lr)
    for step in range(1, steps + 1):
        batch = toy_batch(backbone, n=8, seed=step)
        loss = torch.nn.functional.cross_entropy(model(**batch), batch["labels"]) + method.extra_loss(model.backbone)
        loss.backward()
        optimizer.step()
        method.on_step(model.backbone, step, total or steps)
        optimizer.zero_grad(set_to_none=True)
        yield step


def test_at_init_equals_base(tiny_model):
    base, _, _, backbone = build_classifier(tiny_model, "head")
    ada, _, _, _ = build_classifier(tiny_model, "adalora")
    batch = toy_batch(backbone)
    assert torch.equal(base.eval()(**batch), ada.eval()(**batch))
    assert all(isinstance(m.base_layer, torch.nn.Linear) for m in _wrappers(ada).values())
    assert sorted(n.rsplit(".", 1)[-1] for n in _wrappers(ada)) == ["query", "query", "value", "value"]


def test_schedule_warms_up_falls_cubically_then_holds_the_target():
    schedule = BudgetSchedule.over(100, initial=48, target=16, tinit=0.1, tfinal=0.3)
    assert (schedule.warmup_end, schedule.final_start) == (10, 70)
    budgets = [schedule.budget(s) for s in range(1, 101)]
    assert budgets[:10] == [48] * 10 and budgets[69:] == [16] * 31
    assert all(a >= b for a, b in zip(budgets, budgets[1:]))
    assert schedule.budget(40) == 16 + int(32 * 0.5**3)  # halfway through the fall: 1/8 of the excess left
    assert [schedule.phase(s) for s in (10, 11, 69, 70, 71)] == ["warmup", "decrease", "decrease", "fix", "final"]


@pytest.mark.parametrize("total", [1, 2, 3, 9])
def test_schedule_with_few_steps_still_reaches_the_target(total):
    schedule = BudgetSchedule.over(total, initial=24, target=16, tinit=0.1, tfinal=0.3)
    assert 1 <= schedule.final_start <= total and schedule.budget(schedule.final_start) == 16
    assert schedule.phase(schedule.final_start) == "fix"


def test_budget_reaches_its_target_on_schedule(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "adalora", OPTIONS)
    schedule = BudgetSchedule.over(20, initial=16, target=8, tinit=0.2, tfinal=0.3)
    fixed = None
    for step in _train(model, method, params, backbone, steps=20):
        masks = [m.rank_mask.clone() for m in _wrappers(model).values()]
        assert sum(int(mask.sum()) for mask in masks) == schedule.budget(step), step
        if step == schedule.final_start:
            fixed = masks
        if step >= schedule.final_start:
            assert all(torch.equal(a, b) for a, b in zip(masks, fixed))  # the final mask does not move
        for layer in _wrappers(model).values():
            assert not layer.lora_lambda[~layer.rank_mask].any()  # dropped triplets hold λ = 0
    assert len({int(m.rank_mask.sum()) for m in _wrappers(model).values()}) > 1  # the budget moved between matrices


def test_masked_triplets_have_no_effect_on_outputs(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "adalora", OPTIONS)
    for _ in _train(model, method, params, backbone, steps=14, total=20):  # step 14: mask fixed at the target
        pass
    model.eval()
    batch = toy_batch(backbone)
    before = model(**batch)
    dropped, kept = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        for name, layer in _wrappers(dropped).items():
            off = ~layer.rank_mask
            layer.lora_P[:, off] += 5.0
            layer.lora_Q[off] += 5.0
            _wrappers(kept)[name].lora_P[:, ~off] += 5.0
    assert torch.equal(dropped(**batch), before)
    assert not torch.allclose(kept(**batch), before)


def test_orthogonality_regulariser_goes_down_in_training(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "adalora", OPTIONS)
    start = method.extra_loss(model.backbone).item()
    for _ in _train(model, method, params, backbone, steps=15):
        pass
    assert method.extra_loss(model.backbone).item() < 0.5 * start


def test_saved_adapter_keeps_only_surviving_triplets_and_merges(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "adalora", OPTIONS)
    for _ in _train(model, method, params, backbone, steps=20):
        pass
    model.eval()
    batch = toy_batch(backbone)
    exported = adapter_state(model, method, export=True)
    ranks = final_ranks(exported)
    assert sum(ranks.values()) == 8 and final_ranks(adapter_state(model, method)) == ranks
    for name, layer in _wrappers(model).items():
        assert exported[f"backbone.{name}.lora_P"].shape == (32, ranks[f"backbone.{name}"])
        assert exported[f"backbone.{name}.lora_Q"].shape == (ranks[f"backbone.{name}"], 32)
        assert not any(f"backbone.{name}.{buffer}" in exported for buffer in ("rank_mask", "lora_P_sens_avg"))
    fresh, fresh_method, _, _ = build_classifier(tiny_model, "adalora", OPTIONS, seed=5)
    load_adapter_state(fresh, fresh_method, exported)
    assert [m.rank for m in _wrappers(fresh).values()] == list(ranks.values())
    assert torch.allclose(fresh.eval()(**batch), model(**batch), atol=1e-6)
    fresh_method.merge(fresh.backbone)
    assert torch.allclose(fresh(**batch), model(**batch), atol=1e-5)


def test_a_matrix_without_gradients_keeps_its_scores_and_the_budget_still_applies(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "adalora", OPTIONS)
    batch = toy_batch(backbone)
    loss = torch.nn.functional.cross_entropy(model(**batch), batch["labels"]) + method.extra_loss(model.backbone)
    loss.backward()
    unused, *used = _wrappers(model).values()
    for factor in ("lora_P", "lora_lambda", "lora_Q"):  # as for a target the forward pass did not reach
        getattr(unused, factor).grad = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method.on_step(model.backbone, 14, 20)
    assert not unused.lora_Q_sens_avg.any() and all(layer.lora_Q_sens_avg.any() for layer in used)
    assert sum(int(m.rank_mask.sum()) for m in _wrappers(model).values()) == 8


def test_on_step_without_gradients_warns_and_keeps_the_mask(tiny_model):
    model, method, params, backbone = build_classifier(tiny_model, "adalora", OPTIONS)
    with pytest.warns(UserWarning, match="no gradients"):
        method.on_step(model.backbone, 10, 20)
    assert all(m.rank_mask.all() for m in _wrappers(model).values())


def _request(tiny_model, toy_data, out, **config):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=5e-3, patience=0, seed=7, **config)
    return TrainRequest(task="classify", method="adalora", train_path=toy_data["train"], dev_path=toy_data["dev"],
                        out_dir=str(out), model=tiny_model, options=OPTIONS, config=cfg, few_shot="off")


def test_trainer_reaches_the_budget_and_resume_continues_exactly(tiny_model, toy_data, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the trainer hands on_step this step's gradients
        train(_request(tiny_model, toy_data, tmp_path / "a", checkpoint_every=5))

    with pytest.raises(Interrupt):  # 24 steps: checkpoint at 10 lies inside the budget's fall
        train(_request(tiny_model, toy_data, tmp_path / "b", checkpoint_every=5), step_callbacks=[interrupt_at(13)])
    request = _request(tiny_model, toy_data, tmp_path / "b", checkpoint_every=5)
    request.resume = True
    train(request)
    for saved in ("adapter.safetensors", "checkpoint/trainable.safetensors"):  # the second holds the averages
        a = load_file(tmp_path / "a" / saved)
        b = load_file(tmp_path / "b" / saved)
        assert sum(final_ranks(a).values()) == 8
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), saved


@pytest.mark.parametrize("options, message", [({"r": "0"}, "rank r must be"),
                                              ({"r": "4", "target_rank": "5"}, "target_rank must be"),
                                              ({"tinit": "0.6", "tfinal": "0.6"}, "summing to at most 1"),
                                              ({"beta1": "1"}, "beta1 must be"),
                                              ({"orth_reg": "-1"}, "orth_reg must not")])
def test_bad_options_are_refused(tiny_model, options, message):
    with pytest.raises(SlimtuneError, match=message):
        build_classifier(tiny_model, "adalora", options)
