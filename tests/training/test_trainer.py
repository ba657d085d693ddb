import pytest
import torch
from safetensors.torch import load_file

from slimtune.runs.train import TrainRequest, train
from slimtune.training.config import TrainConfig
from tests.conftest import Interrupt, build_classifier, interrupt_at, toy_batch


@pytest.mark.parametrize("method", ["full", "head", "lora"])
def test_one_step_changes_only_the_intended_parameters(tiny_model, method):
    model, m, params, backbone = build_classifier(tiny_model, method)
    trainable = {id(p) for p in params}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    batch = toy_batch(backbone)
    torch.nn.functional.cross_entropy(model(**batch), batch["labels"]).backward()
    optimizer.step()
    for name, p in model.named_parameters():
        if id(p) in trainable:
            assert p.requires_grad
        else:
            assert not p.requires_grad and torch.equal(p, before[name]), name
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    expected = {"head.1.weight", "head.1.bias"}
    if method == "lora":
        expected |= {n for n in before if n.endswith("lora_A") or n.endswith("lora_B")}
    if method == "full":
        assert changed >= expected and len(changed) > len(before) // 2
    else:
        # LoRA's A only moves once B is non-zero, so after one step B (and the head) changed
        assert {n for n in changed if "lora_A" not in n} == {n for n in expected if "lora_A" not in n}


def _request(tiny_model, toy_data, out, **config):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=5e-3, patience=0, seed=7, **config)
    return TrainRequest(task="classify", method="lora", train_path=toy_data["train"], dev_path=toy_data["dev"],
                        out_dir=str(out), model=tiny_model, options={"r": "4", "dropout": "0.1"}, config=cfg,
                        few_shot="off")  # these tests are about the supervised trainer


def test_interrupted_then_resumed_run_equals_uninterrupted(tiny_model, toy_data, tmp_path):
    train(_request(tiny_model, toy_data, tmp_path / "a", checkpoint_every=5))

    with pytest.raises(Interrupt):
        train(_request(tiny_model, toy_data, tmp_path / "b", checkpoint_every=5), step_callbacks=[interrupt_at(17)])
    assert not (tmp_path / "b" / "adapter.safetensors").exists()
    request = _request(tiny_model, toy_data, tmp_path / "b", checkpoint_every=5)
    request.resume = True
    train(request)
    a = load_file(tmp_path / "a" / "adapter.safetensors")
    b = load_file(tmp_path / "b" / "adapter.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log_a = (tmp_path / "a" / "metrics.jsonl").read_text()
    log_b = (tmp_path / "b" / "metrics.jsonl").read_text()
    strip = lambda log: [l.split('"lr"')[0] for l in log.splitlines()]  # examples/s differ between runs
    assert strip(log_a) == strip(log_b)


def test_training_learns_the_toy_task_and_keeps_best_weights(tiny_model, toy_data, tmp_path):
    request = _request(tiny_model, toy_data, tmp_path / "run")
    request.config.epochs = 6
    request.config.lr = 3e-3
    request.method, request.options = "full", {}
    summary = train(request)
    assert summary["best_dev_accuracy"] >= 0.9
    evals = [h["dev_accuracy"] for h in summary["history"]]
    assert summary["best_dev_accuracy"] == max(evals)


def test_early_stopping_stops_after_patience_and_keeps_the_best_weights(tiny_model, toy_data, tmp_path, monkeypatch):
    """Scripted dev scores: best at step 2, no gain at steps 3 and 4, so patience 2 stops after step 4 and the
    adapter written is the one evaluated at step 2, which differs from step 4's (the steps in between trained)."""
    from slimtune.methods.adaptation import adapter_state
    from slimtune.training.trainer import Trainer

    scores, seen = [0.5, 0.7, 0.6, 0.65, 0.9, 0.9, 0.9], []

    def scripted_evaluate(self, dev_features):
        seen.append(adapter_state(self.model, self.method))
        return {"accuracy": scores[len(seen) - 1]}

    monkeypatch.setattr(Trainer, "evaluate", scripted_evaluate)
    request = _request(tiny_model, toy_data, tmp_path / "run", eval_every=1)
    request.config.patience = 2
    summary = train(request)
    assert summary["stopped_early"] and summary["steps"] == 4 and summary["best_step"] == 2
    assert [h["step"] for h in summary["history"]] == [1, 2, 3, 4]
    saved = load_file(tmp_path / "run" / "adapter.safetensors")
    assert all(torch.equal(saved[k], seen[1][k]) for k in saved)
    assert any(not torch.equal(seen[1][k], seen[3][k]) for k in saved)


def test_train_gives_data_dependent_methods_their_batches(tiny_model, toy_data, tmp_path):
    import warnings

    request = _request(tiny_model, toy_data, tmp_path / "run")
    request.method, request.options = "subnetwork", {"selection": "fisher", "density": "0.05"}
    request.config.epochs = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(request)
    assert not [w for w in caught if "prepare()" in str(w.message)]
