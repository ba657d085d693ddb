"""One training run from files to a saved adapter: the API behind `slimtune train`."""

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from slimtune.adaptation import attach
from slimtune.adapter_files import ADAPTER_FILE, run_config, save_adapter
from slimtune.atomic import write_json
from slimtune.compression.int8 import QUANTIZE_CHOICES, quantize_frozen_linears, weight_bytes
from slimtune.data.batching import length_grouped_batches, pad_batch, to_device
from slimtune.errors import SlimtuneError
from slimtune.methods.registry import create_method
from slimtune.models.loading import fingerprint
from slimtune.tasks import get_task
from slimtune.training import distributed
from slimtune.training import small_data
from slimtune.training.checkpoint import has_checkpoint
from slimtune.training.contrastive import ContrastiveConfig, encoder_parameters, fit_contrastive
from slimtune.training.trainer import TrainConfig, Trainer


@dataclass
class TrainRequest:
    task: str
    method: str
    train_path: str
    out_dir: str
    dev_path: str | None = None
    model: str | None = None
    options: dict = field(default_factory=dict)
    max_train_examples: int | None = None
    dev_fraction: float = 0.1
    max_length: int | None = None
    pooling: str | None = None
    read_options: dict = field(default_factory=dict)  # reader flags: table columns, tag scheme
    quantize: str | None = None  # "int8": keep the frozen base weights in int8 (compression/int8.py)
    resume: bool = False
    overwrite: bool = False
    config: TrainConfig = field(default_factory=TrainConfig)
    few_shot: str = "auto"  # small-data recipe: auto, contrastive, supervised, off (training/small_data.py)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)


def split_dev(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded validation split carved from train: (train, dev)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, min(int(len(rows) * fraction), 2000))
    if len(rows) - n_dev < 1:
        raise SlimtuneError("training data too small to carve a dev split; pass --dev")
    dev_idx = set(order[:n_dev])
    return [r for i, r in enumerate(rows) if i not in dev_idx], [r for i, r in enumerate(rows) if i in dev_idx]


def count_parameters(model: torch.nn.Module, trainable: list) -> dict:
    total = sum(p.numel() for p in model.parameters())
    n = sum(p.numel() for p in trainable)
    return {"trainable_parameters": n, "total_parameters": total, "trainable_percent": round(100 * n / total, 4)}


class PeakMemory:
    """A step callback: the largest resident set size of this process seen after any optimizer step."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss

    def __call__(self, progress) -> None:
        self.peak = max(self.peak, self.process.memory_info().rss)


def train(request: TrainRequest, step_callbacks=()) -> dict:
    """Train and save; under torchrun every rank calls this, and only rank 0 writes the run directory."""
    ranks = distributed.from_environment()
    out = Path(request.out_dir)
    if out.exists() and (out / ADAPTER_FILE).exists() and not (request.resume or request.overwrite):
        raise SlimtuneError(f"{out} already holds an adapter; pass --overwrite to replace it or --resume to continue")
    if request.resume and not has_checkpoint(out / "checkpoint"):  # before the recipe line: an error is one line
        raise SlimtuneError(f"{out}: no checkpoint to resume from")
    task = get_task(request.task)
    if request.quantize not in (None, *QUANTIZE_CHOICES):
        raise SlimtuneError(f"unknown --quantize {request.quantize!r}; choose from {list(QUANTIZE_CHOICES)}")
    method = create_method(request.method, request.options)
    task.check_method(method)
    if request.quantize and method.needs_float_base_weights:
        raise SlimtuneError(f"method {method.name} computes with the base weight matrices in fp32; "
                            f"--quantize {request.quantize} keeps them only as int8")
    cfg = request.config
    if cfg.lr is None:
        cfg.lr = method.default_lr
    train_rows = task.read(request.train_path, **request.read_options)
    given_rows = min(len(train_rows), request.max_train_examples or len(train_rows))  # what the recipe sizes
    if request.dev_path:
        dev_rows = task.read(request.dev_path, **request.read_options)
    elif small_data.is_small(given_rows, request.few_shot):  # small data: no dev carved from a few dozen rows
        dev_rows = []
    else:
        train_rows, dev_rows = split_dev(train_rows, request.dev_fraction, cfg.seed)
    if request.max_train_examples and len(train_rows) > request.max_train_examples:
        keep = sorted(random.Random(cfg.seed).sample(range(len(train_rows)), request.max_train_examples))
        train_rows = [train_rows[i] for i in keep]
    labels = task.label_names(train_rows)

    backbone = task.load_backbone(request.model, request.pooling, request.max_length)
    base_fingerprint = fingerprint(backbone.model)
    torch.manual_seed(cfg.seed)
    model = task.build_model(backbone, labels)
    params = attach(model, method)
    parameter_counts = count_parameters(model, params)  # before quantization turns frozen weights into buffers
    if request.quantize:
        quantize_frozen_linears(model.backbone)
    memory = {"model_weight_bytes": weight_bytes(model)}
    model.to(ranks.device)
    train_features = task.encode(train_rows, backbone.tokenizer, labels, backbone.max_length)
    dev_features = task.encode(dev_rows, backbone.tokenizer, labels, backbone.max_length) if dev_rows else []
    settings = {**task.run_settings(train_rows), **({"base_quantize": request.quantize} if request.quantize else {})}
    config = run_config(task, method, request.model, base_fingerprint, backbone, labels, settings)
    # --- small-data hook: choose and report the recipe (training/small_data.py) ---
    recipe = small_data.choose_recipe(request.few_shot, given_rows, small_data.sentence_level(train_features),
                                      bool(encoder_parameters(model, params)), bool(dev_features), cfg,
                                      distributed=ranks.world_size > 1, resume=request.resume, classes=len(labels))
    cfg.batch_size = recipe.batch_size
    if ranks.is_main:
        print(recipe.line(), file=sys.stderr)

    pad_id = backbone.tokenizer.pad_token_id
    order = length_grouped_batches([len(f["input_ids"]) for f in train_features], cfg.batch_size, cfg.seed, 0)
    started = time.perf_counter()
    method.prepare(model, (to_device(pad_batch([train_features[i] for i in b], pad_id), ranks.device) for b in order),
                   task.loss)
    prepare_seconds = time.perf_counter() - started
    trainer = Trainer(model, method, task, params, cfg, out, pad_id, labels, ranks)
    peak_rss = PeakMemory()
    trainer.step_callbacks.extend([peak_rss, *step_callbacks])
    if recipe.name == "contrastive":
        out.mkdir(parents=True, exist_ok=True)
        summary = fit_contrastive(model, method, task, params, train_features, dev_features, cfg, pad_id, labels,
                                  out / "metrics.jsonl", request.contrastive, trainer.step_callbacks)
    else:
        source = small_data.RepeatedPasses(train_features, cfg.batch_size, cfg.seed, pad_id, recipe.passes_per_epoch)
        summary = trainer.fit(source, dev_features, resume=request.resume)
    summary["recipe"] = recipe.as_dict()
    chance = check_chance(task, model, summary, train_features, dev_features, pad_id, labels, cfg.batch_size)
    if chance and ranks.is_main:
        print(f"warning: {chance}", file=sys.stderr)
    model.cpu()
    summary.update(parameter_counts)
    summary.update(memory, train_peak_rss_bytes=peak_rss.peak, quantize=request.quantize,
                   processes=ranks.world_size)
    if not ranks.is_main:
        return summary
    adapter_path = save_adapter(out, model, method, config)
    summary.update({"prepare_seconds": round(prepare_seconds, 2), "adapter_bytes": adapter_path.stat().st_size,
                    "train_examples": len(train_features), "dev_examples": len(dev_features), "lr": cfg.lr,
                    "method": method.name, "task": task.name})
    write_json(out / "metrics.json", summary)
    write_json(out / "train_config.json", {**cfg.__dict__, "train": str(request.train_path),
                                           "dev": request.dev_path, "options": request.options})
    return summary


def check_chance(task, model, summary, train_features, dev_features, pad_id, labels, batch_size) -> str | None:
    """The warning when the best dev score (without dev: the training score) never beat the majority class."""
    if not small_data.sentence_level(train_features) or task.primary_metric != "accuracy":
        return None
    if dev_features:
        return small_data.majority_check(summary, train_features, dev_features, summary["best_dev_accuracy"], "dev")
    score = task.evaluate(model, train_features, pad_id, batch_size * 2, labels)["accuracy"]
    summary["train_accuracy"] = score
    return small_data.majority_check(summary, train_features, train_features, score, "training")


def describe(summary: dict, metric: str) -> str:
    """One line for the terminal: best dev score, what was trained, what it cost."""
    prepared = summary.get("prepare_seconds", 0)
    best = summary[f"best_dev_{metric}"]
    scored = f"best dev {metric} {best:.4f} (step {summary['best_step']})" if best is not None else (
        f"no dev set: final weights after {summary['steps']} steps"
        + (f", training {metric} {summary['train_' + metric]:.4f}" if f"train_{metric}" in summary else ""))
    return (
        f"{scored}; "
        f"trainable {summary['trainable_parameters']:,} of {summary['total_parameters']:,} "
        f"({summary['trainable_percent']:.2f}%); adapter {summary['adapter_bytes'] / 1024:.1f} KiB; "
        f"{summary['train_seconds']:.1f} s training, {summary['examples_per_second']:.3g} examples/s, "
        f"{summary['tokens_per_second']:.0f} tokens/s"
        + (f" (after {prepared:.1f} s preparing)" if prepared >= 0.1 else "")
    )
