"""Experiment logs beside `metrics.jsonl`: every record the trainer logs, as scalars a dashboard can plot.

`--log tensorboard` writes TensorBoard event files to RUN/tensorboard/ (`tensorboard --logdir RUN`): training loss,
learning rate and examples/s every `log_every` steps, each dev metric at every evaluation, and whatever else a
record carries (a multi-task run's learned task weights), grouped by record type ("train/loss", "eval/dev_f1").

`--log mlflow` sends the same scalars to the MLflow tracking store MLflow is configured for (`MLFLOW_TRACKING_URI`,
e.g. `sqlite:///mlflow.db` or a server; experiment `MLFLOW_EXPERIMENT_NAME`, default "slimtune"), one MLflow run
per slimtune run, named after the run directory, with the run's settings as its parameters.
"""

import os
import time
from pathlib import Path

from slimtune.errors import SlimtuneError
from slimtune.ownership import final_name

LOGGERS = ("tensorboard", "mlflow")


def scalars(record: dict) -> dict[str, float]:
    """A record's numbers keyed "type/name" ("train/loss"); its step and text fields left out."""
    kind = record.get("type", "log")
    return {f"{kind}/{key}": float(value) for key, value in record.items()
            if key not in ("type", "step") and isinstance(value, (int, float)) and not isinstance(value, bool)}


class TensorBoardLog:
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SlimtuneError("--log tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def __call__(self, record: dict) -> None:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, record["step"])

    def close(self) -> None:
        self.writer.close()


class MLflowLog:
    def __init__(self, run_dir: Path, settings: dict):
        try:
            import mlflow
            from mlflow.entities import Metric, Param
        except ImportError:
            raise SlimtuneError("--log mlflow needs the mlflow package: pip install mlflow-skinny") from None
        self.metric = Metric
        try:  # a bad MLFLOW_TRACKING_URI or an unreachable server: one line before training starts
            self.client = mlflow.MlflowClient()
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "slimtune")
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            self.run_id = self.client.create_run(experiment_id, run_name=final_name(run_dir)).info.run_id
            params = [Param(key, str(value)[:6000]) for key, value in sorted(settings.items())]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
                self.client.log_batch(self.run_id, params=params[start:start + 100])
        except Exception as e:  # MLflow raises its own exception types, and its stores' drivers theirs
            message = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SlimtuneError(f"--log mlflow: the MLflow tracking store refused ({message})") from None

    def __call__(self, record: dict) -> None:
        now = int(time.time() * 1000)
        metrics = [self.metric(tag.replace("/", "_"), value, now, record["step"])
                   for tag, value in scalars(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def open_loggers(names: tuple[str, ...], run_dir: Path, settings: dict) -> list:
    """One logger per name in `names` (validated against LOGGERS); `settings` become an MLflow run's parameters."""
    unknown = set(names) - set(LOGGERS)
    if unknown:
        raise SlimtuneError(f"unknown --log {sorted(unknown)[0]!r}; choose from {list(LOGGERS)}")
    return [TensorBoardLog(run_dir) if name == "tensorboard" else MLflowLog(run_dir, settings) for name in names]
