"""--augment eda: training rows rewritten per epoch, seeded; dev rows never."""

from slimtune.runs.prepare import build_run, prepare_training
from slimtune.runs.train import SingleTask, TrainRequest
from slimtune.training.augmented_batches import AugmentedBatches
from slimtune.training.config import TrainConfig


def _prepared(tiny_model, toy_data, tmp_path, seed=3):
    request = TrainRequest(task="classify", method="lora", train_path=toy_data["train"], dev_path=toy_data["dev"],
                           out_dir=str(tmp_path / "run"), model=tiny_model, few_shot="off",
                           config=TrainConfig(epochs=2, batch_size=8, seed=seed, augment="eda", augment_rate=0.3))
    kind = SingleTask(request)
    return kind, prepare_training(build_run(kind, request.config))


def test_only_training_rows_are_augmented_and_each_epoch_is_seeded(tiny_model, toy_data, tmp_path):
    kind, prepared = _prepared(tiny_model, toy_data, tmp_path)
    source = prepared.source
    assert isinstance(source, AugmentedBatches) and source.source_rows == kind.train_rows
    tokenizer = prepared.built.backbone.tokenizer
    plain_dev = kind.task.encode(kind.dev_rows, tokenizer, kind.labels, prepared.built.backbone.max_length)
    assert prepared.dev_features == plain_dev

    epochs = [source.augmented_rows(e) for e in (0, 1)]
    assert [r.label for r in epochs[0]] == [r.label for r in kind.train_rows]  # labels kept, texts rewritten
    changed = [sum(a.text != b.text for a, b in zip(rows, kind.train_rows)) for rows in epochs]
    assert all(0 < c < len(kind.train_rows) for c in changed)
    assert [r.text for r in epochs[0]] != [r.text for r in epochs[1]]
    _, again = _prepared(tiny_model, toy_data, tmp_path / "again")
    assert again.source.augmented_rows(1) == epochs[1]
    _, other = _prepared(tiny_model, toy_data, tmp_path / "other", seed=4)
    assert other.source.augmented_rows(1) != epochs[1]
    batches = source.epoch(1)
    assert [source.rows(b) for b in batches][0][0]["input_ids"] in [f["input_ids"] for f in source.features]
