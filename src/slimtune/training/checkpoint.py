"""Periodic training checkpoints that `--resume` continues from to the same result, with no pickle in them.

A checkpoint directory holds tensors in safetensors and everything else in JSON, so reading one never runs code:
  trainable.safetensors  the method's full training state          best.safetensors  the best weights so far
  state.safetensors      optimizer state tensors (`optimizer.<param index>.<key>`, e.g. exp_avg [*param shape])
                         and each rank's torch RNG state (`torch_rng.<rank>`, uint8 [5056] on CPU)
  state.json             optimizer hyper-parameters and param-group layout, the other per-parameter state
                         values, scheduler state, Python RNG state
  progress.json          step, epoch, best score, ...           settings.json   the settings the run belongs to
Any other file in it (an `optimizer.pt` planted by someone, say) is never opened. The directory is written
beside its place and swapped in whole (slimtune.ownership.commit).
"""

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from slimtune.atomic import write_json, write_safetensors
from slimtune.errors import SlimtuneError
from slimtune.ownership import commit, read_marker, recover, temp_dir_for

PROGRESS, SETTINGS, STATE_JSON, STATE_TENSORS = "progress.json", "settings.json", "state.json", "state.safetensors"


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
                    torch_rng: list[torch.Tensor], settings: dict | None = None) -> None:
    """`torch_rng`: the torch RNG state of every rank, in rank order (one entry on a single process);
    `settings`: what determines the run, which a resume must match (see `check_settings`)."""
    tmp = temp_dir_for(directory, "checkpoint")
    write_safetensors(tmp / "trainable.safetensors", trainable)
    if best:
        write_safetensors(tmp / "best.safetensors", best)
    optimizer_tensors, optimizer_plain = _split_optimizer(optimizer.state_dict())
    rng = {f"torch_rng.{rank}": state for rank, state in enumerate(torch_rng)}
    write_safetensors(tmp / STATE_TENSORS, {**optimizer_tensors, **rng})
    write_json(tmp / STATE_JSON, {"optimizer": optimizer_plain, "scheduler": scheduler.state_dict(),
                                  "python_rng": random.getstate()})
    write_json(tmp / SETTINGS, settings or {})
    write_json(tmp / PROGRESS, asdict(progress))
    commit(tmp, directory)


def load_checkpoint(directory: Path, optimizer, scheduler, rank: int = 0):
    """(progress, trainable state, best state); restores optimizer, scheduler and `rank`'s RNG in place.

    A run resumed on more processes than saved it gives the extra ranks rank 0's RNG state.
    """
    try:
        progress = Progress(**json.loads((directory / PROGRESS).read_text()))
        counters = (progress.step, progress.epoch, progress.batch_in_epoch, progress.examples_seen, progress.tokens_seen)
        if not all(type(n) is int and n >= 0 for n in counters):
            raise ValueError(f"{PROGRESS} holds counters that are not non-negative integers")
        plain = json.loads((directory / STATE_JSON).read_text())
        tensors = load_file(directory / STATE_TENSORS)
        optimizer.load_state_dict(_join_optimizer(plain["optimizer"], tensors))
        scheduler.load_state_dict(plain["scheduler"])
        states = [tensors[k] for k in sorted((k for k in tensors if k.startswith("torch_rng.")),
                                             key=lambda k: int(k.split(".")[1]))]
        torch.set_rng_state(states[rank] if rank < len(states) else states[0])
        version, internal, gauss = plain["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        best_file = directory / "best.safetensors"
        best = load_file(best_file) if best_file.exists() else {}
        return progress, load_file(directory / "trainable.safetensors"), best
    except (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError, SafetensorError) as e:
        raise SlimtuneError(f"{directory}: damaged or incomplete checkpoint ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); start again with --overwrite") from None


def has_checkpoint(directory: Path) -> bool:
    recover(directory)
    return read_marker(directory) is not None and (directory / PROGRESS).exists()


def check_settings(directory: Path, settings: dict) -> None:
    """Refuse to resume a checkpoint written for other settings, naming the keys that differ."""
    try:
        saved = json.loads((directory / SETTINGS).read_text())
        if not isinstance(saved, dict):
            raise ValueError(f"{SETTINGS} is not a JSON object")
    except (OSError, ValueError):
        raise SlimtuneError(f"{directory}: the checkpoint does not record its settings; "
                            "start again with --overwrite") from None
    current = json.loads(json.dumps(settings))  # tuples as lists, as saved
    differing = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if differing:
        detail = "; ".join(f"{k}: {_short(saved.get(k))} then, {_short(current.get(k))} now" for k in differing)
        raise SlimtuneError(f"--resume with other settings than the checkpoint's ({detail}); "
                            "rerun with the same settings, or start again with --overwrite")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _split_optimizer(state_dict: dict) -> tuple[dict, dict]:
    """An optimizer state dict as (tensors by `optimizer.<param index>.<key>`, the rest as JSON-able values)."""
    tensors, plain = {}, {}
    for index, values in state_dict["state"].items():
        plain[str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                plain[str(index)][key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": plain}


def _join_optimizer(plain: dict, tensors: dict) -> dict:
    state = {int(index): dict(values) for index, values in plain["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
              for group in plain["param_groups"]]  # betas were a tuple before JSON
    return {"state": state, "param_groups": groups}
