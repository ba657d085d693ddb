"""--log tensorboard: the trainer's records as TensorBoard scalars."""

import pytest

from slimtune.errors import SlimtuneError
from slimtune.training.loggers import open_loggers


def test_tensorboard_event_files_hold_losses_and_dev_metrics(tiny_model, toy_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from slimtune.cli import main

    out = tmp_path / "run"
    assert main(["train", "--method", "lora", "--train", toy_data["train"], "--dev", toy_data["dev"],
                 "--model", tiny_model, "--epochs", "2", "--batch-size", "4", "--log", "tensorboard",
                 "--out", str(out)]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/examples_per_second", "eval/dev_accuracy"} <= tags
    assert len(events.Scalars("eval/dev_accuracy")) == 2


def test_unknown_logger_is_refused(tmp_path):
    with pytest.raises(SlimtuneError, match="unknown --log 'wandb'"):
        open_loggers(("wandb",), tmp_path)
