"""One training run from files to a saved adapter: the API behind `slimtune train`."""

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from slimtune.adaptation import attach
from slimtune.adapter_files import run_config, save_adapter
from slimtune.atomic import write_json
from slimtune.compression.int8 import QUANTIZE_CHOICES, quantize_frozen_linears, weight_bytes
from slimtune.data.batching import length_grouped_batches, pad_batch, to_device
from slimtune.errors import SlimtuneError
from slimtune.methods.registry import create_method
from slimtune.models.loading import fingerprint
from slimtune.tasks import get_task
from slimtune.ownership import work_dir_for
from slimtune.training import distributed
from slimtune.training.run_dir import check_run_out, commit_run, config_settings, data_identity, open_work_dir
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
    if ranks.is_main:
        check_run_out(out, request.resume, request.overwrite)
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
    if request.dev_path:
        dev_rows = task.read(request.dev_path, **request.read_options)
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
    dev_features = task.encode(dev_rows, backbone.tokenizer, labels, backbone.max_length)
    settings = {**task.run_settings(train_rows), **({"base_quantize": request.quantize} if request.quantize else {})}
    config = run_config(task, method, request.model, base_fingerprint, backbone, labels, settings)

    pad_id = backbone.tokenizer.pad_token_id
    order = length_grouped_batches([len(f["input_ids"]) for f in train_features], cfg.batch_size, cfg.seed, 0)
    started = time.perf_counter()
    method.prepare(model, (to_device(pad_batch([train_features[i] for i in b], pad_id), ranks.device) for b in order),
                   task.loss)
    prepare_seconds = time.perf_counter() - started
    settings = run_settings(request, method, backbone, base_fingerprint)
    work = open_work_dir(out, request.resume, settings) if ranks.is_main else work_dir_for(out)
    ranks.barrier()  # the other ranks read the work directory rank 0 has just prepared
    trainer = Trainer(model, method, task, params, cfg, work, pad_id, labels, ranks)
    trainer.run_settings = settings
    peak_rss = PeakMemory()
    trainer.step_callbacks.extend([peak_rss, *step_callbacks])
    summary = trainer.fit(train_features, dev_features, resume=request.resume)
    model.cpu()
    summary.update(parameter_counts)
    summary.update(memory, train_peak_rss_bytes=peak_rss.peak, quantize=request.quantize,
                   processes=ranks.world_size)
    if not ranks.is_main:
        return summary
    adapter_path = save_adapter(work, model, method, config)
    summary.update({"prepare_seconds": round(prepare_seconds, 2), "adapter_bytes": adapter_path.stat().st_size,
                    "train_examples": len(train_features), "dev_examples": len(dev_features), "lr": cfg.lr,
                    "method": method.name, "task": task.name})
    write_json(work / "metrics.json", summary)
    write_json(work / "train_config.json", {**cfg.__dict__, "train": str(request.train_path),
                                            "dev": request.dev_path, "options": request.options})
    commit_run(work, out)
    return summary


def run_settings(request: TrainRequest, method, backbone, base_fingerprint: str) -> dict:
    """Everything that determines the run, recorded in its checkpoints: a resume must match it."""
    return {"task": request.task, "method": method.name, "options": method.options_dict(), "model": request.model,
            "base_fingerprint": base_fingerprint, "train_data": data_identity(request.train_path),
            "dev_data": data_identity(request.dev_path), "max_train_examples": request.max_train_examples,
            "dev_fraction": request.dev_fraction, "max_length": backbone.max_length, "pooling": backbone.pooling,
            "read_options": request.read_options, "quantize": request.quantize, **config_settings(request.config)}


def describe(summary: dict, metric: str) -> str:
    """One line for the terminal: best dev score, what was trained, what it cost."""
    prepared = summary.get("prepare_seconds", 0)
    return (
        f"best dev {metric} {summary[f'best_dev_{metric}']:.4f} (step {summary['best_step']}); "
        f"trainable {summary['trainable_parameters']:,} of {summary['total_parameters']:,} "
        f"({summary['trainable_percent']:.2f}%); adapter {summary['adapter_bytes'] / 1024:.1f} KiB; "
        f"{summary['train_seconds']:.1f} s training, {summary['examples_per_second']:.3g} examples/s, "
        f"{summary['tokens_per_second']:.0f} tokens/s"
        + (f" (after {prepared:.1f} s preparing)" if prepared >= 0.1 else "")
    )
