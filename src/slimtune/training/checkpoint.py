"""Periodic training checkpoints that `--resume` continues from to the same result."""

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from slimtune.atomic import replace_directory, write_json, write_safetensors, write_torch


@dataclass
class Progress:
    """Counters that say exactly where training stands."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    examples_seen: int = 0
    tokens_seen: int = 0  # real (unpadded) input tokens
    train_seconds: float = 0.0
    best_metric: float | None = None
    best_step: int = 0
    evals_without_gain: int = 0
    stopped_early: bool = False
    history: list = field(default_factory=list)  # eval records
    loss_sum: float = 0.0  # training loss since the last log record
    loss_count: int = 0


def save_checkpoint(directory: Path, progress: Progress, trainable: dict, best: dict, optimizer, scheduler,
                    torch_rng: list[torch.Tensor]) -> None:
    """`torch_rng`: the torch RNG state of every rank, in rank order (one entry on a single process)."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_safetensors(tmp / "trainable.safetensors", trainable)
    if best:
        write_safetensors(tmp / "best.safetensors", best)
    write_torch(
        tmp / "optimizer.pt",
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch_rng,
            "python_rng": random.getstate(),
        },
    )
    write_json(tmp / "progress.json", asdict(progress))
    replace_directory(tmp, directory)


def load_checkpoint(directory: Path, optimizer, scheduler, rank: int = 0):
    """(progress, trainable state, best state); restores optimizer, scheduler and `rank`'s RNG in place.

    A run resumed on more processes than saved it gives the extra ranks rank 0's RNG state.
    """
    if not (directory / "progress.json").exists():
        old = directory.with_name(directory.name + ".old")
        directory = old if (old / "progress.json").exists() else directory
    progress = Progress(**json.loads((directory / "progress.json").read_text()))
    extra = torch.load(directory / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    states = extra["torch_rng"] if isinstance(extra["torch_rng"], list) else [extra["torch_rng"]]  # older: one
    torch.set_rng_state(states[rank] if rank < len(states) else states[0])
    random.setstate(extra["python_rng"])
    best_file = directory / "best.safetensors"
    best = load_file(best_file) if best_file.exists() else {}
    return progress, load_file(directory / "trainable.safetensors"), best


def has_checkpoint(directory: Path) -> bool:
    return (directory / "progress.json").exists() or (directory.with_name(directory.name + ".old") / "progress.json").exists()
