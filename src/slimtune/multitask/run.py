"""One multi-task run from files to a saved adapter: the API behind `slimtune train --task multi`."""

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

import slimtune
from slimtune.adapter_files import save_adapter
from slimtune.atomic import write_json
from slimtune.compression.int8 import QUANTIZE_CHOICES, quantize_frozen_linears, weight_bytes
from slimtune.errors import SlimtuneError
from slimtune.methods.registry import create_method
from slimtune.models.loading import fingerprint, load_backbone
from slimtune.multitask.files import MULTI
from slimtune.multitask.model import MultiTaskModel, PerTaskMethods, attach_all
from slimtune.multitask.objective import LOSS_WEIGHTINGS, LossWeights, MultiTask
from slimtune.multitask.plot import plot_task_weights
from slimtune.multitask.sampling import MultiTaskBatches, task_probabilities
from slimtune.multitask.specs import TaskSpec
from slimtune.tasks import get_task
from slimtune.training.run import count_parameters, split_dev
from slimtune.training.run_dir import check_run_out, commit_run, config_settings, data_identity, open_work_dir
from slimtune.training.trainer import TrainConfig, Trainer

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
    quantize: str | None = None  # "int8": keep the frozen base weights in int8 (compression/int8.py)
    resume: bool = False
    overwrite: bool = False
    config: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class TaskData:
    task: object
    train_rows: list
    dev_rows: list
    labels: list[str]


def read_task_data(spec: TaskSpec, request: MultiTrainRequest) -> TaskData:
    task, seed = get_task(spec.task), request.config.seed
    train_rows = task.read(spec.train)
    if spec.dev:
        dev_rows = task.read(spec.dev)
    else:
        train_rows, dev_rows = split_dev(train_rows, request.dev_fraction, seed)
    if request.max_train_examples and len(train_rows) > request.max_train_examples:
        keep = sorted(random.Random(seed).sample(range(len(train_rows)), request.max_train_examples))
        train_rows = [train_rows[i] for i in keep]
    return TaskData(task, train_rows, dev_rows, task.label_names(train_rows))


def train_multitask(request: MultiTrainRequest, step_callbacks=()) -> dict:
    out, cfg = Path(request.out_dir), request.config
    if request.loss_weights not in LOSS_WEIGHTINGS:
        raise SlimtuneError(f"unknown loss weighting {request.loss_weights!r}; "
                            f"choose from {', '.join(LOSS_WEIGHTINGS)}")
    if not request.loss_weights_lr > 0:
        raise SlimtuneError("--loss-weights-lr must be positive")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SlimtuneError("--task multi does not support --nproc yet (nor several torchrun processes); "
                            "train it on one process")
    if request.quantize not in (None, *QUANTIZE_CHOICES):
        raise SlimtuneError(f"unknown --quantize {request.quantize!r}; choose from {list(QUANTIZE_CHOICES)}")
    check_run_out(out, request.resume, request.overwrite)
    data = {spec.name: read_task_data(spec, request) for spec in request.tasks}
    names = list(data)
    tasks = {name: d.task for name, d in data.items()}
    labels = {name: d.labels for name, d in data.items()}
    probabilities = task_probabilities({n: len(d.train_rows) for n, d in data.items()}, request.sampling,
                                       request.temperature)

    backbone = load_backbone(request.model, request.pooling, request.max_length)
    base_fingerprint = fingerprint(backbone.model)
    torch.manual_seed(cfg.seed)
    weights = LossWeights(names, request.loss_weights, request.fixed_weights)
    model = MultiTaskModel(backbone, tasks, labels, request.sharing, weights)
    if request.sharing == "shared":
        method = create_method(request.method, request.options)
    else:
        method = PerTaskMethods({name: create_method(request.method, request.options) for name in names})
    if request.quantize and method.needs_float_base_weights:
        raise SlimtuneError(f"method {method.name} computes with the base weight matrices in fp32; "
                            f"--quantize {request.quantize} keeps them only as int8")
    if cfg.lr is None:
        cfg.lr = method.default_lr
    params = attach_all(model, method, tasks)
    parameter_counts = count_parameters(model, params)  # before quantization turns frozen weights into buffers
    if request.quantize:
        quantize_frozen_linears(model.backbone)  # per-task encoder copies keep sharing one int8 base
    tokenizer, pad_id = backbone.tokenizer, backbone.tokenizer.pad_token_id
    train_features = {n: d.task.encode(d.train_rows, tokenizer, d.labels, backbone.max_length) for n, d in data.items()}
    dev_features = {n: d.task.encode(d.dev_rows, tokenizer, d.labels, backbone.max_length) for n, d in data.items()}
    source = MultiTaskBatches(train_features, cfg.batch_size, cfg.seed, pad_id, probabilities)
    objective = MultiTask(tasks, weights)
    prepare(method, model, source, objective)

    settings = run_settings(request, method, backbone, base_fingerprint)
    work = open_work_dir(out, request.resume, settings)
    trainer = Trainer(model, method, objective, params, cfg, work, pad_id, labels)
    trainer.run_settings = settings
    if request.loss_weights == "learned":
        trainer.own_lr[id(weights.log_vars)] = request.loss_weights_lr
    trainer.step_callbacks.append(lambda progress: append_record(trainer.metrics_path,
                                                                 objective.weights_record(progress.step)))
    trainer.step_callbacks.extend(step_callbacks)
    summary = trainer.fit(source, dev_features, resume=request.resume)

    config = {
        "slimtune_version": slimtune.__version__, "task": MULTI, "method": method.name,
        "options": method.options_dict(), "base_model": request.model, "base_fingerprint": base_fingerprint,
        "pooling": backbone.pooling, "max_length": backbone.max_length, "sharing": request.sharing,
        **({"base_quantize": request.quantize} if request.quantize else {}),
        "loss_weights": request.loss_weights, "task_weights": weights.weights(),
        "sampling": {"mode": request.sampling, "temperature": request.temperature, "probabilities": probabilities},
        "tasks": {n: {"task": d.task.name, "labels": d.labels, **d.task.run_settings(d.train_rows)}
                  for n, d in data.items()},
    }
    adapter_path = save_adapter(work, model, method, config)
    plotted = plot_task_weights(trainer.metrics_path, work / WEIGHTS_PLOT,
                                f"{request.loss_weights} task weights ({method.name}, {request.sharing})")
    summary.update(parameter_counts, model_weight_bytes=weight_bytes(model), quantize=request.quantize)
    best = next((h for h in summary["history"] if h["step"] == summary["best_step"]), {})
    summary["best_dev_per_task"] = {n: best.get(f"dev_{n}_{t.primary_metric}") for n, t in tasks.items()}
    summary.update({"adapter_bytes": adapter_path.stat().st_size, "method": method.name, "task": MULTI,
                    "tasks": {n: d.task.name for n, d in data.items()}, "sharing": request.sharing,
                    "train_examples": {n: len(f) for n, f in train_features.items()},
                    "dev_examples": {n: len(f) for n, f in dev_features.items()},
                    "task_batches_per_epoch": source.counts, "final_task_weights": weights.weights(), "lr": cfg.lr,
                    "weights_plot": str(out / WEIGHTS_PLOT) if plotted else None})
    write_json(work / "metrics.json", summary)
    write_json(work / "train_config.json", {
        **cfg.__dict__, "tasks": [spec.__dict__ for spec in request.tasks], "options": request.options,
        "sharing": request.sharing, "sampling": request.sampling, "temperature": request.temperature,
        "loss_weights": request.loss_weights, "loss_weights_lr": request.loss_weights_lr,
        "fixed_weights": request.fixed_weights, "max_train_examples": request.max_train_examples,
        "quantize": request.quantize})
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
            "max_length": backbone.max_length, "pooling": backbone.pooling, "quantize": request.quantize,
            **config_settings(request.config)}


def prepare(method, model: MultiTaskModel, source: MultiTaskBatches, objective: MultiTask) -> None:
    """Give data-dependent methods (subnetwork's fisher mask) batches of every task, each scored by its own
    task's unweighted loss; `Method.prepare` computes each batch's loss right after drawing it."""
    current = {}

    def batches():
        for item in source.epoch(0):
            current["task"] = item[0]
            yield source.collate(source.rows(item))

    method.prepare(model, batches(), lambda logits, labels: objective.tasks[current["task"]].loss(logits, labels))


def append_record(metrics_path: Path, record: dict) -> None:
    """One more line of the run's metrics.jsonl (the trainer trims lines past a resumed checkpoint by `step`)."""
    with open(metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")


def describe(summary: dict) -> str:
    """One line for the terminal: the best mean dev score, each task's score there, the final weights."""
    per_task = ", ".join(f"{name} {value:.4f}" for name, value in summary["best_dev_per_task"].items())
    weights = ", ".join(f"{name} {w:.3f}" for name, w in summary["final_task_weights"].items())
    return (f"best dev mean_score {summary['best_dev_mean_score']:.4f} (step {summary['best_step']}: {per_task}); "
            f"task weights {weights}; trainable {summary['trainable_parameters']:,} of "
            f"{summary['total_parameters']:,} ({summary['trainable_percent']:.2f}%); "
            f"{summary['train_seconds']:.1f} s training")
