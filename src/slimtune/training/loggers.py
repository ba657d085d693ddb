"""Experiment logs beside `metrics.jsonl`: every record the trainer logs, as scalars a dashboard can plot.

`--log tensorboard` writes TensorBoard event files to RUN/tensorboard/ (`tensorboard --logdir RUN`): training loss,
learning rate and examples/s every `log_every` steps, each dev metric at every evaluation, and whatever else a
record carries (a multi-task run's learned task weights), grouped by record type ("train/loss", "eval/dev_f1").
"""

from pathlib import Path

from slimtune.errors import SlimtuneError

LOGGERS = ("tensorboard",)


class TensorBoardLog:
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SlimtuneError("--log tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def __call__(self, record: dict) -> None:
        kind, step = record.get("type", "log"), record["step"]
        for key, value in record.items():
            if key not in ("type", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


def open_loggers(names: tuple[str, ...], run_dir: Path) -> list:
    """One logger per name in `names` (validated against LOGGERS)."""
    unknown = set(names) - set(LOGGERS)
    if unknown:
        raise SlimtuneError(f"unknown --log {sorted(unknown)[0]!r}; choose from {list(LOGGERS)}")
    return [TensorBoardLog(run_dir) for name in names if name == "tensorboard"]
