"""The small-data recipe: chosen below SMALL_DATA_ROWS and reported; chance-level runs are flagged."""

import json

import pytest
import torch

from slimtune.cli import main
from slimtune.errors import SlimtuneError
from slimtune.runs.prepare import build_run, prepare_training
from slimtune.runs.train import SingleTask, TrainRequest, train
from slimtune.training.batch_source import FeatureBatches
from slimtune.training.config import TrainConfig
from slimtune.training.small_data import MIN_STEPS, SMALL_DATA_ROWS, RepeatedPasses, choose_recipe
from tests.conftest import sentiment_rows, write_tsv


@pytest.mark.parametrize("rows", [16, 48, SMALL_DATA_ROWS - 1])
def test_below_the_threshold_the_supervised_recipe_makes_enough_steps_in_batches_that_fit(rows):
    recipe = choose_recipe("supervised", rows, sentence_labels=True, adapts_encoder=True, has_dev=False,
                           config=TrainConfig(epochs=3, batch_size=32))
    assert recipe.name == "small-data" and recipe.steps >= MIN_STEPS
    assert recipe.batch_size <= max(4, rows // 8)
    assert "no dev split carved" in recipe.line() and f"{rows} training rows < {SMALL_DATA_ROWS}" in recipe.line()


def test_at_the_threshold_the_standard_recipe_stays():
    recipe = choose_recipe("auto", SMALL_DATA_ROWS, True, True, False, TrainConfig(batch_size=32))
    assert recipe.name == "standard" and recipe.batch_size == 32 and recipe.passes_per_epoch == 1


def test_auto_picks_contrastive_only_where_it_applies():
    config = TrainConfig()
    assert choose_recipe("auto", 40, True, True, False, config).name == "contrastive"
    assert choose_recipe("auto", 40, False, True, False, config).name == "small-data"  # token labels (ner)
    assert choose_recipe("auto", 40, True, False, False, config).name == "small-data"  # head only
    assert choose_recipe("auto", 40, True, True, False, config, distributed=True).name == "small-data"
    assert choose_recipe("auto", 130, True, True, False, config, classes=2).name == "small-data"  # 65 per class
    assert choose_recipe("auto", 128, True, True, False, config, classes=2).name == "contrastive"  # 64 per class


def test_repeated_passes_are_whole_deterministic_passes():
    features = [{"input_ids": [1] * (i % 5 + 1), "labels": i, "id": i} for i in range(10)]
    source = RepeatedPasses(FeatureBatches(features, 4, seed=0, pad_id=0), passes=3)
    epoch = source.epoch(1)
    assert len(epoch) == source.batches_per_epoch == 9
    assert sorted(row["id"] for b in epoch for row in source.rows(b)) == sorted(list(range(10)) * 3)
    assert epoch == source.epoch(1) and epoch != source.epoch(2)
    assert source.collate(source.rows(epoch[0]))["labels"].shape[0] == len(epoch[0])


def test_augmented_small_data_makes_the_recipes_steps_with_fresh_texts_each_pass(tiny_model, tmp_path, capsys):
    data = write_tsv(tmp_path / "train.tsv", sentiment_rows(40, 0))
    request = TrainRequest(task="classify", method="lora", train_path=data, out_dir=str(tmp_path / "run"),
                           model=tiny_model, few_shot="supervised", options={"r": 4},
                           config=TrainConfig(augment="eda", augment_rate=0.3))
    kind = SingleTask(request)
    prepared = prepare_training(build_run(kind, request.config))
    assert kind.recipe.steps >= MIN_STEPS and f"= {kind.recipe.steps} optimizer steps" in capsys.readouterr().err
    epoch = prepared.source.epoch(0)
    assert len(epoch) == prepared.source.batches_per_epoch == kind.recipe.steps // request.config.epochs
    per_pass = len(epoch) // kind.recipe.passes_per_epoch
    first, second = (sorted(tuple(r["input_ids"]) for b in epoch[i * per_pass:(i + 1) * per_pass]
                            for r in prepared.source.rows(b)) for i in (0, 1))
    assert len(first) == len(second) == 40
    assert first != second  # each pass rewrites the rows afresh


def test_train_chooses_reports_and_records_the_recipe(tiny_model, tmp_path, capsys):
    data = write_tsv(tmp_path / "train.tsv", sentiment_rows(40, 0))
    out = tmp_path / "run"
    assert main(["train", "--method", "lora", "--train", data, "--out", str(out), "--model", tiny_model,
                 "--few-shot", "supervised", "--set", "r=4"]) == 0
    err = capsys.readouterr().err
    recipe_lines = [line for line in err.splitlines() if line.startswith("recipe:")]
    assert len(recipe_lines) == 1 and "small-data (40 training rows < 500)" in recipe_lines[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"]["name"] == "small-data" and metrics["recipe"]["head_start"] == "logistic"
    assert "head started from a logistic regression" in recipe_lines[0]
    assert 0 < metrics["head_start_seconds"] <= metrics["train_seconds"]
    assert metrics["steps"] >= MIN_STEPS and metrics["train_examples"] == 40 and metrics["dev_examples"] == 0
    assert metrics["best_dev_accuracy"] is None and "train_accuracy" in metrics


def test_standard_data_keeps_the_standard_recipe_and_carves_dev(tiny_model, tmp_path, capsys):
    data = write_tsv(tmp_path / "train.tsv", sentiment_rows(SMALL_DATA_ROWS, 0))
    request = TrainRequest(task="classify", method="head", train_path=data, out_dir=str(tmp_path / "run"),
                           model=tiny_model, config=TrainConfig(epochs=1, batch_size=64))
    summary = train(request)
    assert summary["recipe"]["name"] == "standard" and summary["dev_examples"] == SMALL_DATA_ROWS // 10
    assert "recipe: standard" in capsys.readouterr().err


def test_a_run_that_never_beats_the_majority_class_says_so(tiny_model, tmp_path, capsys):
    train_rows = sentiment_rows(40, 0)
    majority = max(("pos", "neg"), key=[label for _, label in train_rows].count)
    dev_rows = [row for row in sentiment_rows(60, 1) if row[1] == majority][:16]  # majority scores 1.0 here
    out = tmp_path / "run"
    code = main(["train", "--method", "head", "--train", write_tsv(tmp_path / "train.tsv", train_rows),
                 "--dev", write_tsv(tmp_path / "dev.tsv", dev_rows), "--out", str(out), "--model", tiny_model,
                 "--lr", "1e-9", "--epochs", "1"])
    assert code == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "never beat the majority class (1.0000" in warnings[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["beats_majority"] is False and metrics["majority_baseline"] == 1.0
    assert metrics["warnings"] == [warnings[0].removeprefix("warning: ")]


def test_a_run_that_learns_is_not_flagged(tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--method", "full", "--train", write_tsv(tmp_path / "train.tsv", sentiment_rows(96, 0)),
                 "--dev", write_tsv(tmp_path / "dev.tsv", sentiment_rows(32, 1)), "--out", str(out),
                 "--model", tiny_model, "--few-shot", "supervised", "--lr", "3e-3"]) == 0
    assert "warning:" not in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["beats_majority"] is True and "warnings" not in metrics


def test_contrastive_is_not_chosen_where_it_cannot_run():
    config = TrainConfig()
    assert choose_recipe("auto", 40, True, True, False, config, resume=True).name == "small-data"
    for where in ({"distributed": True}, {"resume": True}):
        with pytest.raises(SlimtuneError):
            choose_recipe("contrastive", 40, True, True, False, config, **where)


@pytest.mark.parametrize("asked, flag", [({"augment": "eda"}, "--augment"), ({"adversarial": "fgm"}, "--adversarial"),
                                         ({"checkpoint_every": 10}, "--checkpoint-every"),
                                         ({"eval_every": 5}, "--eval-every"), ({"grad_accum": 2}, "--grad-accum")])
def test_what_only_the_supervised_loop_does_is_done_not_dropped(asked, flag):
    auto = choose_recipe("auto", 40, True, True, False, TrainConfig(**asked))
    assert auto.name == "small-data" and f"{flag} given, which only this recipe does" in auto.line()
    with pytest.raises(SlimtuneError, match=f"contrastive does not do {flag}"):
        choose_recipe("contrastive", 40, True, True, False, TrainConfig(**asked))


def test_contrastive_with_augment_is_a_one_line_error(tiny_model, tmp_path, capsys):
    data = write_tsv(tmp_path / "train.tsv", sentiment_rows(24, 0))
    code = main(["train", "--method", "lora", "--train", data, "--out", str(tmp_path / "run"), "--model", tiny_model,
                 "--few-shot", "contrastive", "--augment", "eda"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--augment" in err and not (tmp_path / "run").exists()


def test_off_keeps_the_standard_recipe_and_carves_dev_from_small_data(tiny_model, tmp_path):
    data = write_tsv(tmp_path / "train.tsv", sentiment_rows(40, 0))
    summary = train(TrainRequest(task="classify", method="lora", train_path=data, out_dir=str(tmp_path / "run"),
                                 model=tiny_model, few_shot="off", config=TrainConfig(epochs=1, batch_size=8)))
    assert summary["recipe"]["name"] == "standard" and summary["dev_examples"] == 4 and summary["steps"] == 5


def test_only_one_label_per_text_starts_the_head_from_a_regression():
    config = TrainConfig()
    assert choose_recipe("supervised", 40, True, True, False, config).head_start == "logistic"
    token_level = choose_recipe("supervised", 40, False, True, False, config)  # ner: a head per token
    assert token_level.head_start == "" and "head_start" not in token_level.as_dict()
    assert choose_recipe("off", 40, True, True, False, config).head_start == ""


def test_the_supervised_recipe_trains_from_the_regression_head(tiny_model, tmp_path):
    """With a learning rate too small to move anything, the saved head is the logistic regression fitted on
    the untrained encoder's vectors of the training rows, not the random head a model is built with."""
    from safetensors.torch import load_file

    from slimtune.runs.adapter_files import load_adapter
    from slimtune.training.contrastive import embed_rows, fit_head

    data = write_tsv(tmp_path / "train.tsv", sentiment_rows(40, 0))
    out = tmp_path / "run"
    train(TrainRequest(task="classify", method="lora", train_path=data, out_dir=str(out), model=tiny_model,
                       options={"r": "4"}, few_shot="supervised", config=TrainConfig(lr=1e-12, seed=3)))
    saved = load_file(out / "adapter.safetensors")
    loaded = load_adapter(out)
    features = loaded.task.encode(loaded.task.read(data), loaded.backbone.tokenizer, loaded.labels,
                                  loaded.backbone.max_length)
    fit_head(loaded.model, embed_rows(loaded.model, features, loaded.backbone.tokenizer.pad_token_id),
             [f["labels"] for f in features], len(loaded.labels), c=1.0, seed=3)
    torch.testing.assert_close(saved["head.1.weight"], loaded.model.head[-1].weight.detach(), atol=1e-5, rtol=1e-4)
    assert saved["head.1.weight"].abs().sum() > 0
