"""Contrastive few-shot mode: a normal, loadable slimtune adapter; its head is the fitted logistic regression."""

import json

import numpy as np
import pytest
import torch

from slimtune.cli import main
from slimtune.errors import SlimtuneError
from slimtune.runs.adapter_files import load_adapter
from slimtune.runs.train import TrainRequest, train
from slimtune.training.config import TrainConfig
from slimtune.training.contrastive import ContrastiveConfig, fit_head
from tests.conftest import sentiment_rows, write_tsv


@pytest.fixture
def few_shot_data(tmp_path):
    return {"train": write_tsv(tmp_path / "train.tsv", sentiment_rows(24, 0)),
            "dev": write_tsv(tmp_path / "dev.tsv", sentiment_rows(32, 1))}


def test_contrastive_mode_saves_an_adapter_that_loads_and_scores_as_trained(tiny_model, few_shot_data, tmp_path,
                                                                            capsys):
    out = tmp_path / "run"
    assert main(["train", "--method", "lora", "--train", few_shot_data["train"], "--dev", few_shot_data["dev"],
                 "--out", str(out), "--model", tiny_model, "--few-shot", "contrastive", "--set", "r=4"]) == 0
    assert "recipe: contrastive (--few-shot contrastive; 24 training rows < 500)" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"]["name"] == "contrastive"
    assert metrics["contrastive"]["pairs"] == 24 * ContrastiveConfig().pairs_per_row
    assert metrics["adapter_bytes"] < 2**20
    loaded = load_adapter(out)
    assert loaded.method.name == "lora" and loaded.labels == ["neg", "pos"]
    features = loaded.task.encode(loaded.task.read(few_shot_data["dev"]), loaded.backbone.tokenizer, loaded.labels,
                                  loaded.backbone.max_length)
    scored = loaded.task.evaluate(loaded.model, features, loaded.backbone.tokenizer.pad_token_id, 16, loaded.labels)
    assert scored["accuracy"] == pytest.approx(metrics["best_dev_accuracy"])
    assert main(["eval", "--adapter", str(out), "--data", few_shot_data["dev"], "--json"]) == 0
    assert main(["merge", "--adapter", str(out), "--out", str(tmp_path / "merged")]) == 0


def test_auto_mode_uses_contrastive_for_small_classification_with_lora(tiny_model, few_shot_data, tmp_path, capsys):
    summary = train(TrainRequest(task="classify", method="lora", train_path=few_shot_data["train"],
                                 out_dir=str(tmp_path / "run"), model=tiny_model, options={"r": "4"},
                                 config=TrainConfig(seed=1)))
    assert summary["recipe"]["name"] == "contrastive" and summary["dev_examples"] == 0
    mean_tokens = summary["contrastive"]["mean_tokens"]
    length = min(3.0, max(0.38, (mean_tokens / 13) ** 2))
    assert summary["lr"] == pytest.approx(2e-3 * (20 / 30) ** 0.5 * length, rel=1e-3)  # 24 rows: 480 pairs, 30 steps
    assert summary["contrastive"]["lr"] == summary["lr"]
    assert (f"lr {summary['lr']:.2g} (the method's 0.002 × √(20/30) at most 1, × ({mean_tokens:.1f}/13 tokens per "
            "row)² within 0.38-3)") in capsys.readouterr().err


def test_the_pair_phase_scales_the_methods_lr_with_its_steps_and_text_length_unless_lr_is_given(
        tiny_model, few_shot_data, tmp_path, capsys):
    settings = ContrastiveConfig()
    assert settings.scaled_lr(2e-3, 8, 13) == settings.scaled_lr(2e-3, 20, 13) == 2e-3  # steps never raise it
    assert settings.scaled_lr(2e-3, 80, 13) == pytest.approx(1e-3)
    assert settings.scaled_lr(2e-3, 320, 13) == pytest.approx(5e-4)
    assert settings.scaled_lr(2e-3, 80, 13 * 1.5) == pytest.approx(2.25e-3)  # longer rows: larger, by the square
    assert settings.scaled_lr(2e-3, 80, 100) == pytest.approx(3e-3)  # no higher than the measured 3x
    assert settings.scaled_lr(2e-3, 80, 13 * 0.7) == pytest.approx(0.49e-3)  # shorter rows: smaller
    assert settings.scaled_lr(2e-3, 80, 1) == pytest.approx(0.38e-3)  # no lower than the measured 0.38x
    summary = train(TrainRequest(task="classify", method="lora", train_path=few_shot_data["train"],
                                 out_dir=str(tmp_path / "given"), model=tiny_model, options={"r": "4"},
                                 few_shot="contrastive", config=TrainConfig(lr=3e-3)))
    assert summary["lr"] == summary["contrastive"]["lr"] == 3e-3
    assert "pairs: 480 (20 per row) in 30 steps of 16, lr 0.003\n" in capsys.readouterr().err


def test_pair_flags_size_the_pair_phase_and_are_refused_where_no_pair_phase_runs(tiny_model, few_shot_data, tmp_path,
                                                                                 capsys):
    out = tmp_path / "run"
    assert main(["train", "--train", few_shot_data["train"], "--out", str(out), "--model", tiny_model,
                 "--set", "r=4", "--pairs-per-row", "10", "--pair-epochs", "2"]) == 0
    assert "pairs: 240 (10 per row) × 2 epochs in 30 steps of 16" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["contrastive"]["pairs"] == 240 and metrics["contrastive"]["epochs"] == 2
    assert metrics["steps"] == 30
    again = tmp_path / "again"  # the saved flags train the same pair phase again
    assert main(["train", "--config", str(out / "train_config.yaml"), "--out", str(again)]) == 0
    assert json.loads((again / "metrics.json").read_text())["contrastive"] == metrics["contrastive"]
    for flags, message in ((["--few-shot", "supervised", "--pair-epochs", "2"], "--pair-epochs sizes the contrastive"),
                           (["--pairs-per-row", "0"], "--pairs-per-row must be in 1-1000, got 0"),
                           (["--pair-epochs", "0"], "--pair-epochs must be at least 1, got 0")):
        bad = tmp_path / "bad"
        assert main(["train", "--train", few_shot_data["train"], "--out", str(bad), "--model", tiny_model,
                     *flags]) == 2
        assert message in capsys.readouterr().err and not bad.exists()


def test_a_pair_phase_too_large_to_hold_is_refused_before_training():
    settings = ContrastiveConfig(pairs_per_row=1000)
    settings.check_pairs(10_000)  # 10 million pairs: held
    with pytest.raises(SlimtuneError, match="10001 rows × 1000 pairs per row is over 10,000,000 pairs an epoch"):
        settings.check_pairs(10_001)


def test_contrastive_changes_only_encoder_adapter_and_head(tiny_model, few_shot_data, tmp_path):
    from safetensors.torch import load_file

    train(TrainRequest(task="classify", method="lora", train_path=few_shot_data["train"], out_dir=str(tmp_path / "r"),
                       model=tiny_model, options={"r": "4"}, few_shot="contrastive"))
    state = load_file(tmp_path / "r" / "adapter.safetensors")
    lora_b = [v for k, v in state.items() if k.endswith("lora_B")]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: the pair phase moved it
    assert set(k for k in state if not ("lora_" in k)) == {"head.1.weight", "head.1.bias"}


def test_contrastive_refuses_a_method_that_trains_only_the_head(tiny_model, few_shot_data, tmp_path):
    with pytest.raises(SlimtuneError, match="trains only the head"):
        train(TrainRequest(task="classify", method="head", train_path=few_shot_data["train"],
                           out_dir=str(tmp_path / "r"), model=tiny_model, few_shot="contrastive"))


@pytest.mark.parametrize("classes", [2, 3])
def test_fitted_head_reproduces_the_logistic_regression(classes):
    from sklearn.linear_model import LogisticRegression

    from slimtune.models.task_models import SequenceClassifier

    class Config:
        hidden_size, hidden_dropout_prob = 8, 0.1

    class Stub(torch.nn.Module):
        config = Config()

    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(30, 8, generator=generator) * 5  # [N, H]
    labels = [i % classes for i in range(30)]
    model = SequenceClassifier(Stub(), classes, "mean").eval()
    fit_head(model, vectors, labels, classes, c=1.0, seed=0)
    probabilities = model.head(vectors).softmax(-1).detach().numpy()
    scale = vectors.norm(dim=-1).mean().item()
    expected = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit((vectors / scale).numpy(), labels)
    np.testing.assert_allclose(probabilities, expected.predict_proba((vectors / scale).numpy()), atol=1e-5)
