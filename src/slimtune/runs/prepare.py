"""The one way a run is prepared, whatever it trains: `slimtune train` (one task or several) and `plan`'s probe.

Every run goes through the same steps in the same order: refuse what cannot work (the output directory, an int8
base under a method that needs fp32 base weights), read and sample the data, create the method (its defaults may
depend on the data's size), load the base,
seed, build the task model(s), attach the method, quantize the frozen base, encode, and give data-dependent
methods their batches. What differs between a single-task and a multi-task run is a `RunKind`.
"""

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch

from slimtune.data.batching import to_device
from slimtune.errors import SlimtuneError
from slimtune.methods.base import Method
from slimtune.models.int8_base import BASE_INT8_CHOICES, quantize_frozen_linears, weight_bytes
from slimtune.models.loading import Backbone, fingerprint
from slimtune.runs.run_commit import check_run_out
from slimtune.training.batch_source import BatchSource
from slimtune.training.config import TrainConfig
from slimtune.training.distributed import Ranks
from slimtune.training.trainer import Trainer


class RunKind(Protocol):
    """What a kind of run supplies to `build_run` and `prepare_training`; they call it in the order listed."""

    def read(self, seed: int) -> None:
        """Read and sample the training and dev rows."""

    def create_method(self) -> Method:
        """The method to train, already checked against the task(s); its defaults may depend on the data's size."""

    def load_backbone(self) -> Backbone: ...

    def build(self, backbone: Backbone) -> tuple[torch.nn.Module, object, object]:
        """(task model, objective the trainer minimises and scores, labels); called right after seeding."""

    def attach(self, model: torch.nn.Module, method: Method) -> list[torch.nn.Parameter]: ...

    def encode(self, backbone: Backbone) -> tuple[object, object]:
        """(train features, dev features) in the objective's shape."""

    def batch_source(self, train_features, config: TrainConfig, pad_id: int) -> BatchSource: ...


@dataclass
class BuiltRun:
    """A task model with its method attached (and its frozen base quantized when asked), not yet trained."""

    kind: RunKind
    method: Method
    config: TrainConfig  # the caller's, with the method's learning rate when it gave none
    backbone: Backbone
    base_fingerprint: str
    model: torch.nn.Module
    objective: object
    labels: object
    params: list[torch.nn.Parameter]
    parameter_counts: dict
    model_weight_bytes: int


@dataclass
class PreparedRun:
    built: BuiltRun
    train_features: object
    dev_features: object
    source: BatchSource
    prepare_seconds: float

    def trainer(self, out: Path, ranks: Ranks = Ranks(), step_callbacks=()) -> Trainer:
        b = self.built
        trainer = Trainer(b.model, b.method, b.objective, b.params, b.config, out,
                          b.backbone.tokenizer.pad_token_id, b.labels, ranks)
        trainer.step_callbacks.extend(step_callbacks)
        return trainer


def check_output_dir(out: Path, resume: bool, overwrite: bool, ranks: Ranks = Ranks()) -> None:
    """--out may take this run (see runs/run_commit.py); the main rank checks, the others follow it."""
    if ranks.is_main:
        check_run_out(out, resume, overwrite)


def check_base_int8(base_int8: str | None, method: Method | None = None) -> None:
    """An int8 frozen base must be a known scheme, and the method must not compute with the fp32 base weights."""
    if base_int8 not in (None, *BASE_INT8_CHOICES):
        raise SlimtuneError(f"unknown --base-int8 {base_int8!r}; choose from {list(BASE_INT8_CHOICES)}")
    if base_int8 and method is not None and method.needs_float_base_weights:
        raise SlimtuneError(f"method {method.name} computes with the base weight matrices in fp32; "
                            f"--base-int8 {base_int8} keeps them only as int8")


def split_dev(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded validation split carved from train: (train, dev)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, min(int(len(rows) * fraction), 2000))
    if len(rows) - n_dev < 1:
        raise SlimtuneError("training data too small to carve a dev split; pass --dev")
    dev_idx = set(order[:n_dev])
    return [r for i, r in enumerate(rows) if i not in dev_idx], [r for i, r in enumerate(rows) if i in dev_idx]


def read_split(task, train_path, dev_path, read_options: dict, dev_fraction: float, max_train_examples: int | None,
               seed: int, carve_dev=lambda n_rows: True) -> tuple[list, list]:
    """(train rows, dev rows): dev read, or carved from train when `carve_dev(rows given)` (small data keeps every
    row: dev then is empty), then at most `max_train_examples` train rows kept."""
    train_rows = task.read(train_path, **read_options)
    given = min(len(train_rows), max_train_examples or len(train_rows))
    if dev_path:
        dev_rows = task.read(dev_path, **read_options)
    elif carve_dev(given):
        train_rows, dev_rows = split_dev(train_rows, dev_fraction, seed)
    else:
        dev_rows = []
    if max_train_examples and len(train_rows) > max_train_examples:
        keep = sorted(random.Random(seed).sample(range(len(train_rows)), max_train_examples))
        train_rows = [train_rows[i] for i in keep]
    return train_rows, dev_rows


def count_parameters(model: torch.nn.Module, trainable: list) -> dict:
    total = sum(p.numel() for p in model.parameters())
    n = sum(p.numel() for p in trainable)
    return {"trainable_parameters": n, "total_parameters": total, "trainable_percent": round(100 * n / total, 4)}


def build_run(kind: RunKind, config: TrainConfig, base_int8: str | None = None) -> BuiltRun:
    """Checks, method, data, base, task model and attached method: everything up to encoding."""
    check_base_int8(base_int8)
    kind.read(config.seed)
    method = kind.create_method()
    check_base_int8(base_int8, method)
    config = replace(config, lr=method.learning_rate() if config.lr is None else config.lr)
    backbone = kind.load_backbone()
    base_fingerprint = fingerprint(backbone.model)
    torch.manual_seed(config.seed)
    model, objective, labels = kind.build(backbone)
    params = kind.attach(model, method)
    parameter_counts = count_parameters(model, params)  # before quantization turns frozen weights into buffers
    if base_int8:
        quantize_frozen_linears(model.backbone)  # per-task encoder copies keep sharing one int8 base
    return BuiltRun(kind, method, config, backbone, base_fingerprint, model, objective, labels, params,
                    parameter_counts, weight_bytes(model))


def prepare_training(built: BuiltRun, ranks: Ranks = Ranks()) -> PreparedRun:
    """Model on its device, features encoded, batches scheduled, and the method's data-dependent set-up done."""
    built.model.to(ranks.device)
    train_features, dev_features = built.kind.encode(built.backbone)
    source = built.kind.batch_source(train_features, built.config, built.backbone.tokenizer.pad_token_id)
    started = time.perf_counter()
    prepare_method(built.method, built.model, source, built.objective, ranks.device)
    return PreparedRun(built, train_features, dev_features, source, time.perf_counter() - started)


def prepare_run(kind: RunKind, out: Path, config: TrainConfig, base_int8: str | None, resume: bool, overwrite: bool,
                ranks: Ranks = Ranks()) -> PreparedRun:
    check_output_dir(out, resume, overwrite, ranks)
    return prepare_training(build_run(kind, config, base_int8), ranks)


def prepare_method(method: Method, model: torch.nn.Module, source: BatchSource, objective, device) -> None:
    """`Method.prepare` on the first epoch's batches, each scored by the plain loss of its own task
    (`Method.prepare` computes a batch's loss right after drawing it)."""
    current = {}

    def batches():
        for item in source.epoch(0):
            batch = source.collate(source.rows(item))
            current["loss"] = objective.loss_for(batch)
            yield to_device(batch, device)

    method.prepare(model, batches(), lambda logits, labels: current["loss"](logits, labels))
