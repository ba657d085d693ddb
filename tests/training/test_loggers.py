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
                 "--few-shot", "supervised",
                 "--out", str(out)]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/examples_per_second", "eval/dev_accuracy"} <= tags
    assert len(events.Scalars("eval/dev_accuracy")) == 2


def test_unknown_logger_is_refused(tmp_path):
    with pytest.raises(SlimtuneError, match="unknown --log 'wandb'"):
        open_loggers(("wandb",), tmp_path, {})


def test_mlflow_run_holds_settings_losses_and_dev_metrics(tiny_model, toy_data, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from slimtune.cli import main

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "toy")
    assert main(["train", "--method", "lora", "--train", toy_data["train"], "--dev", toy_data["dev"],
                 "--model", tiny_model, "--epochs", "2", "--batch-size", "4", "--lr", "0.005", "--log", "mlflow",
                 "--few-shot", "supervised",
                 "--out", str(tmp_path / "run")]) == 0
    client = mlflow.MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.005" and run.data.params["method"] == "lora"
    assert {"train_loss", "train_lr", "eval_dev_accuracy"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "eval_dev_accuracy")) == 2


def test_a_bad_mlflow_tracking_uri_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    with pytest.raises(SlimtuneError, match="--log mlflow: the MLflow tracking store refused"):
        open_loggers(("mlflow",), tmp_path, {})
