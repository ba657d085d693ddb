"""One multi-task run from files to a saved adapter: the API behind `slimtune train --task multi`."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import slimtune
from slimtune.atomic import write_json
from slimtune.errors import SlimtuneError
from slimtune.methods.registry import create_method
from slimtune.models.loading import load_backbone
from slimtune.runs.adapter_files import save_adapter
from slimtune.runs.int8_keys import BASE_INT8
from slimtune.runs.multitask_plot import plot_task_weights
from slimtune.runs.prepare import prepare_run, read_split
from slimtune.runs.run_commit import commit_run, config_settings, data_identity, open_work_dir
from slimtune.tasks import get_task
from slimtune.tasks.multitask.files import MULTI
from slimtune.tasks.multitask.model import MultiTaskModel, PerTaskMethods, attach_all
from slimtune.tasks.multitask.objective import LOSS_WEIGHTINGS, LossWeights, MultiTask
from slimtune.tasks.multitask.specs import TaskSpec
from slimtune.training.config import TrainConfig
from slimtune.training.task_sampling import MultiTaskBatches, task_probabilities

WEIGHTS_PLOT = "task_weights.png"


@dataclass
class MultiTrainRequest:
    tasks: list[TaskSpec]
    method: str
    out_dir: str
    model: str | None = None
    options: dict = field(default_factory=dict)
    sharing: str = "shared"  # one adapter for all tasks, or "per-task"
    sampling: str = "proportional"  # or "temperature"
    temperature: float = 2.0
    loss_weights: str = "learned"  # or "fixed"
    loss_weights_lr: float = 0.05  # peak learning rate of the learned sᵢ (Adam moves them ~lr per step)
    fixed_weights: dict[str, float] = field(default_factory=dict)  # fixed: weight per task, 1 when not named
    max_train_examples: int | None = None  # per task
    dev_fraction: float = 0.1
    max_length: int | None = None
    pooling: str | None = None
    base_int8: str | None = None  # "int8": keep the frozen base weights in int8 (models/int8_base.py)
    resume: bool = False
    overwrite: bool = False
    config: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class TaskData:
    task: object
    train_rows: list
    dev_rows: list
    labels: list[str]


class SeveralTasks:
    """The `RunKind` of a multi-task run: one base, a task model per task, trained on a mixture of their batches."""

    def __init__(self, request: MultiTrainRequest):
        self.request = request
        if request.loss_weights not in LOSS_WEIGHTINGS:
            raise SlimtuneError(f"unknown loss weighting {request.loss_weights!r}; "
                                f"choose from {', '.join(LOSS_WEIGHTINGS)}")
        if not request.loss_weights_lr > 0:
            raise SlimtuneError("--loss-weights-lr must be positive")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise SlimtuneError("--task multi does not support --nproc yet (nor several torchrun processes); "
                                "train it on one process")
        self.names = [spec.name for spec in request.tasks]

    def create_method(self):
        r = self.request
        if r.sharing == "shared":
            return create_method(r.method, r.options)
        return PerTaskMethods({name: create_method(r.method, r.options) for name in self.names})

    def read(self, seed: int) -> None:
        r = self.request
        self.data = {}
        for spec in r.tasks:
            task = get_task(spec.task)
            train_rows, dev_rows = read_split(task, spec.train, spec.dev, {}, r.dev_fraction, r.max_train_examples,
                                              seed)
            self.data[spec.name] = TaskData(task, train_rows, dev_rows, task.label_names(train_rows))
        self.tasks = {name: d.task for name, d in self.data.items()}
        self.labels = {name: d.labels for name, d in self.data.items()}
        self.probabilities = task_probabilities({n: len(d.train_rows) for n, d in self.data.items()}, r.sampling,
                                                r.temperature)

    def load_backbone(self):
        return load_backbone(self.request.model, self.request.pooling, self.request.max_length)

    def build(self, backbone):
        r = self.request
        self.weights = LossWeights(self.names, r.loss_weights, r.fixed_weights)
        model = MultiTaskModel(backbone, self.tasks, self.labels, r.sharing, self.weights)
        return model, MultiTask(self.tasks, self.weights, r.loss_weights_lr), self.labels

    def attach(self, model, method):
        return attach_all(model, method, self.tasks)

    def encode(self, backbone):
        tokenizer, length = backbone.tokenizer, backbone.max_length
        return tuple({n: d.task.encode(getattr(d, rows), tokenizer, d.labels, length) for n, d in self.data.items()}
                     for rows in ("train_rows", "dev_rows"))

    def batch_source(self, train_features, config: TrainConfig, pad_id: int):
        return MultiTaskBatches(train_features, config.batch_size, config.seed, pad_id, self.probabilities)

    def run_config(self, method, base_fingerprint: str, backbone) -> dict:
        """adapter_config.json of a multi-task adapter: the shared base and method, and each task's own settings."""
        r = self.request
        return {
            "slimtune_version": slimtune.__version__, "task": MULTI, "method": method.name,
            "options": method.options_dict(), "base_model": r.model, "base_fingerprint": base_fingerprint,
            "pooling": backbone.pooling, "max_length": backbone.max_length, "sharing": r.sharing,
            **({BASE_INT8: r.base_int8} if r.base_int8 else {}),
            "loss_weights": r.loss_weights, "task_weights": self.weights.weights(),
            "sampling": {"mode": r.sampling, "temperature": r.temperature, "probabilities": self.probabilities},
            "tasks": {n: {"task": d.task.name, "labels": d.labels, **d.task.run_settings(d.train_rows)}
                      for n, d in self.data.items()},
        }


def train_multitask(request: MultiTrainRequest, step_callbacks=()) -> dict:
    out = Path(request.out_dir)
    kind = SeveralTasks(request)
    prepared = prepare_run(kind, out, request.config, request.base_int8, request.resume, request.overwrite)
    built, method, cfg = prepared.built, prepared.built.method, prepared.built.config
    settings = run_settings(request, method, built.backbone, built.base_fingerprint)
    work = open_work_dir(out, request.resume, settings)
    trainer = prepared.trainer(work, step_callbacks=step_callbacks)
    trainer.run_settings = settings
    summary = trainer.fit(prepared.source, prepared.dev_features, resume=request.resume)

    config = kind.run_config(method, built.base_fingerprint, built.backbone)
    adapter_path = save_adapter(work, built.model, method, config)
    plotted = plot_task_weights(trainer.metrics_path, work / WEIGHTS_PLOT,
                                f"{request.loss_weights} task weights ({method.name}, {request.sharing})")
    summary.update(built.parameter_counts, model_weight_bytes=built.model_weight_bytes, base_int8=request.base_int8)
    best = next((h for h in summary["history"] if h["step"] == summary["best_step"]), {})
    summary["best_dev_per_task"] = {n: best.get(f"dev_{n}_{t.primary_metric}") for n, t in kind.tasks.items()}
    summary.update({"adapter_bytes": adapter_path.stat().st_size, "method": method.name, "task": MULTI,
                    "tasks": {n: d.task.name for n, d in kind.data.items()}, "sharing": request.sharing,
                    "train_examples": {n: len(f) for n, f in prepared.train_features.items()},
                    "dev_examples": {n: len(f) for n, f in prepared.dev_features.items()},
                    "task_batches_per_epoch": prepared.source.counts, "final_task_weights": kind.weights.weights(),
                    "lr": cfg.lr, "weights_plot": str(out / WEIGHTS_PLOT) if plotted else None})
    write_json(work / "metrics.json", summary)
    write_json(work / "train_config.json", {
        **cfg.__dict__, "tasks": [spec.__dict__ for spec in request.tasks], "options": request.options,
        "sharing": request.sharing, "sampling": request.sampling, "temperature": request.temperature,
        "loss_weights": request.loss_weights, "loss_weights_lr": request.loss_weights_lr,
        "fixed_weights": request.fixed_weights, "max_train_examples": request.max_train_examples,
        "base_int8": request.base_int8})
    commit_run(work, out)
    return summary


def run_settings(request: MultiTrainRequest, method, backbone, base_fingerprint: str) -> dict:
    """Everything that determines the run, recorded in its checkpoints: a resume must match it."""
    tasks = [{**spec.__dict__, "train": data_identity(spec.train), "dev": data_identity(spec.dev)}
             for spec in request.tasks]
    return {"tasks": tasks, "method": method.name, "options": method.options_dict(), "model": request.model,
            "base_fingerprint": base_fingerprint, "sharing": request.sharing, "sampling": request.sampling,
            "temperature": request.temperature, "loss_weights": request.loss_weights,
            "loss_weights_lr": request.loss_weights_lr, "fixed_weights": request.fixed_weights,
            "max_train_examples": request.max_train_examples, "dev_fraction": request.dev_fraction,
            "max_length": backbone.max_length, "pooling": backbone.pooling, "base_int8": request.base_int8,
            **config_settings(request.config)}


def describe(summary: dict) -> str:
    """One line for the terminal: the best mean dev score, each task's score there, the final weights."""
    per_task = ", ".join(f"{name} {value:.4f}" for name, value in summary["best_dev_per_task"].items())
    weights = ", ".join(f"{name} {w:.3f}" for name, w in summary["final_task_weights"].items())
    return (f"best dev mean_score {summary['best_dev_mean_score']:.4f} (step {summary['best_step']}: {per_task}); "
            f"task weights {weights}; trainable {summary['trainable_parameters']:,} of "
            f"{summary['total_parameters']:,} ({summary['trainable_percent']:.2f}%); "
            f"{summary['train_seconds']:.1f} s training")
