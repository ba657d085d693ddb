"""Adversarial training (training/adversarial.py): FGM's step against a hand computation, PGD's ball, eval untouched."""

import pytest
import torch
import torch.nn.functional as F

from slimtune.data.batching import pad_batch
from slimtune.errors import SlimtuneError
from slimtune.tasks import get_task
from slimtune.training.adversarial import AdversarialConfig, Adversary, project, unit_per_example
from slimtune.training.batch_source import FeatureBatches
from slimtune.training.config import TrainConfig
from slimtune.training.trainer import Trainer
from tests.conftest import build_classifier, make_tiny_bert, sentiment_rows


@pytest.fixture(scope="module")
def no_dropout_model(tmp_path_factory) -> str:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert-no-dropout"), dropout=0.0)


def _features(backbone, n=6):
    rows = sentiment_rows(n, 3)
    enc = backbone.tokenizer([t for t, _ in rows])
    return [{"input_ids": ids, "labels": int(l == "pos")} for ids, (_, l) in zip(enc["input_ids"], rows)]


def _trainer_grads(model_dir, tmp_path, **config):
    model, method, params, backbone = build_classifier(model_dir, "lora")
    model.train()
    features = _features(backbone)
    pad = backbone.tokenizer.pad_token_id
    trainer = Trainer(model, method, get_task("classify"), params, TrainConfig(batch_size=8, lr=1e-3, **config),
                      tmp_path, pad, ["neg", "pos"])
    loss = trainer._backward(model, FeatureBatches(features, 8, 0, pad), features, 1, sync=True)
    return model, params, backbone, features, [p.grad.clone() for p in params], loss


def _loss_with(model, batch, embedded):
    hidden = model.backbone(inputs_embeds=embedded, attention_mask=batch["attention_mask"]).last_hidden_state
    return F.cross_entropy(model.from_hidden(hidden, batch["attention_mask"]), batch["labels"])


def test_fgm_step_is_the_gradient_of_plain_plus_perturbed_loss(no_dropout_model, tmp_path):
    eps = 0.5
    model, params, backbone, features, fgm_grads, loss = _trainer_grads(no_dropout_model, tmp_path,
                                                                       adversarial="fgm", adv_epsilon=eps)
    # by hand: g = ∂L/∂e, r = ε g/‖g‖ per example, step gradient = ∇θ L(e) + ∇θ L(e + r)
    for p in params:
        p.grad = None
    batch = pad_batch(features, backbone.tokenizer.pad_token_id)
    embedded = model.backbone.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    plain = _loss_with(model, batch, embedded)
    (g,) = torch.autograd.grad(plain, embedded, retain_graph=True)
    plain.backward()
    plain_grads = [p.grad.clone() for p in params]
    g = g * batch["attention_mask"].unsqueeze(-1)
    r = eps * g / g.flatten(1).norm(dim=1)[:, None, None]
    _loss_with(model, batch, embedded.detach() + r).backward()
    assert loss == pytest.approx(plain.item(), rel=1e-5)
    for got, want, without in zip(fgm_grads, [p.grad for p in params], plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(a, b) for a, b in zip(fgm_grads, plain_grads))  # the step did change


def test_pgd_with_one_step_is_fgm_and_more_steps_differ(no_dropout_model, tmp_path):
    fgm = _trainer_grads(no_dropout_model, tmp_path / "a", adversarial="fgm", adv_epsilon=0.5)[4]
    pgd1 = _trainer_grads(no_dropout_model, tmp_path / "b", adversarial="pgd", adv_epsilon=0.5, adv_steps=1)[4]
    pgd3 = _trainer_grads(no_dropout_model, tmp_path / "c", adversarial="pgd", adv_epsilon=0.5, adv_steps=3)[4]
    for a, b in zip(fgm, pgd1):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(fgm, pgd3))


def test_eval_is_unchanged_and_no_hook_is_left(no_dropout_model, tmp_path):
    model, _, backbone, features, _, _ = _trainer_grads(no_dropout_model, tmp_path, adversarial="pgd", adv_steps=2)
    assert not model.backbone.get_input_embeddings()._forward_hooks
    batch = pad_batch(features, backbone.tokenizer.pad_token_id)
    reference, *_ = build_classifier(no_dropout_model, "lora")  # same seed: the same weights, never perturbed
    model.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch), reference(**batch), rtol=0, atol=0)


def test_perturbation_helpers():
    g = torch.randn(3, 4, 5)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    unit = unit_per_example(g, mask)
    torch.testing.assert_close(unit.flatten(1).norm(dim=1), torch.ones(3))
    assert unit[0, 3].abs().sum() == 0 and unit[1, 2:].abs().sum() == 0
    big = project(5 * unit, 2.0)
    torch.testing.assert_close(big.flatten(1).norm(dim=1), torch.full((3,), 2.0))
    torch.testing.assert_close(project(0.5 * unit, 2.0), 0.5 * unit)


@pytest.mark.parametrize("config, message", [(AdversarialConfig("xyz"), "unknown --adversarial"),
                                             (AdversarialConfig("fgm", epsilon=0), "--adv-epsilon"),
                                             (AdversarialConfig("pgd", steps=0), "--adv-steps")])
def test_bad_settings_are_one_line_errors(config, message):
    with pytest.raises(SlimtuneError, match=message):
        config.validate()


def test_a_pass_that_skips_the_embeddings_is_refused():
    weight = torch.nn.Parameter(torch.ones(3))
    adversary = Adversary(AdversarialConfig("fgm"), torch.nn.Embedding(5, 3))
    with pytest.raises(SlimtuneError, match="nothing to perturb"):
        adversary.backward(None, None, lambda model: weight.sum(), 1.0, torch.ones(2, 4))
