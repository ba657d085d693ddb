"""One training run from files to a saved adapter: the API behind `slimtune train`."""

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from slimtune.atomic import write_json, write_text
from slimtune.data.eda import EmbeddingSynonyms
from slimtune.errors import SlimtuneError
from slimtune.methods.adaptation import attach
from slimtune.methods.registry import create_method, get_method_class
from slimtune.ownership import work_dir_for
from slimtune.runs.adapter_files import run_config, save_adapter
from slimtune.runs.init_adapter import read_initial_adapter
from slimtune.runs.int8_keys import BASE_INT8
from slimtune.runs.prepare import build_run, check_output_dir, prepare_training, read_split
from slimtune.runs.run_commit import commit_run, config_settings, data_identity, open_work_dir
from slimtune.tasks import get_task
from slimtune.training import distributed, small_data
from slimtune.training.augmented_batches import AugmentedBatches
from slimtune.training.batch_source import FeatureBatches
from slimtune.training.config import TrainConfig
from slimtune.training.contrastive import ContrastiveConfig, encoder_parameters, fit_contrastive
from slimtune.training.packing import PackedBatches, check_packable, check_packed_attention


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
    base_int8: str | None = None  # "int8": keep the frozen base weights in int8 (models/int8_base.py)
    resume: bool = False
    overwrite: bool = False
    config: TrainConfig = field(default_factory=TrainConfig)
    flags: dict | None = None  # the command line's resolved flags, saved as train_config.yaml to rerun the run
    init_adapter: str | None = None  # start from this adapter's weights (runs/init_adapter.py)
    few_shot: str = "auto"  # small-data recipe: auto, contrastive, supervised, off (training/small_data.py)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)


class PeakMemory:
    """A step callback: the largest resident set size of this process seen after any optimizer step."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss

    def __call__(self, progress) -> None:
        self.peak = max(self.peak, self.process.memory_info().rss)


def check_task_options(task, config: TrainConfig) -> None:
    """--adversarial and --augment only where the task can take them."""
    if config.adversarial and not task.adversarial:
        raise SlimtuneError(f"--adversarial does not apply to task {task.name}")
    if config.augment and not task.augmentable:
        raise SlimtuneError(f"--augment does not apply to task {task.name}")


class SingleTask:
    """The `RunKind` of a one-task run."""

    def __init__(self, request: TrainRequest):
        self.request, self.task = request, get_task(request.task)
        # fills the request's method options and base from the adapter it starts from
        self.initial = read_initial_adapter(request) if request.init_adapter else None

    def check_flags(self) -> None:
        """What the flags alone refuse (an unknown method, a remedy or --pack the task cannot take), before any
        data is read."""
        check_task_options(self.task, self.request.config)
        self.request.contrastive.validate()
        method_class = get_method_class(self.request.method)
        if self.request.config.pack:
            check_packable(self.task, method_class)

    def create_method(self):
        """The method, with the defaults the data's size calls for (the small-data ones below SMALL_DATA_ROWS)."""
        r = self.request
        small = small_data.takes_small_data_defaults(self.given_rows, r.few_shot)
        method = create_method(r.method, r.options, self.task.name, small_data=small)
        self.task.check_method(method)
        return method

    def read(self, seed: int) -> None:
        self.check_flags()
        r, given = self.request, {}

        def carve_dev(n_rows: int) -> bool:  # small data: no dev carved from a few dozen rows
            given["rows"] = n_rows
            return not small_data.is_small(n_rows, r.few_shot)

        self.train_rows, self.dev_rows = read_split(self.task, r.train_path, r.dev_path, r.read_options,
                                                    r.dev_fraction, r.max_train_examples, seed, carve_dev)
        self.given_rows = given.get("rows", len(self.train_rows))  # what the small-data recipe is sized by
        self.labels = self.task.label_names(self.train_rows)
        if self.initial:
            self.labels = self.initial.check_labels(self.labels)

    def load_backbone(self):
        return self.task.load_backbone(self.request.model, self.request.pooling, self.request.max_length)

    def build(self, backbone):
        return self.task.build_model(backbone, self.labels), self.task, self.labels

    def attach(self, model, method):
        self.model, self.params = model, attach(model, method)
        return self.params

    def encode(self, backbone):
        self.backbone = backbone  # the tokenizer and embeddings of --augment
        self.features = tuple(self.task.encode(rows, backbone.tokenizer, self.labels, backbone.max_length)
                              if rows else [] for rows in (self.train_rows, self.dev_rows))
        return self.features

    def batch_source(self, train_features, config: TrainConfig, pad_id: int):
        """Batches by the recipe the data size calls for (training/small_data.py), chosen and reported here;
        with --augment, each pass's rows rewritten afresh (data/eda.py) in batches of the recipe's size."""
        r, dev_features = self.request, self.features[1]
        self.recipe = small_data.choose_recipe(
            r.few_shot, self.given_rows, small_data.sentence_level(train_features),
            bool(encoder_parameters(self.model, self.params)), bool(dev_features), config,
            distributed=distributed.from_environment().world_size > 1, resume=r.resume, classes=len(self.labels))
        if self.recipe.name == "contrastive":
            r.contrastive.check_pairs(len(train_features))
        elif pair_flags := r.contrastive.given_flags():
            raise SlimtuneError(f"{', '.join(pair_flags)} sizes the contrastive few-shot recipe; this run's recipe is "
                                f"{self.recipe.name} (--few-shot contrastive picks it)")
        config.batch_size = self.recipe.batch_size
        source = self.recipe.repeat(self._batches(train_features, config, pad_id), config)
        if distributed.from_environment().is_main and r.few_shot != "off":  # off: the flags as given, unannounced
            print(self.recipe.line(), file=sys.stderr)
        return source

    def _batches(self, train_features, config: TrainConfig, pad_id: int):
        """One pass over the training rows in batches of the recipe's size: packed, augmented or as they are."""
        if config.pack:
            check_packed_attention(self.model, self.model.lm.config.vocab_size)
            return PackedBatches(train_features, config.pack, config.batch_size, config.seed, pad_id)
        if config.augment:
            b = self.backbone
            synonyms = EmbeddingSynonyms(b.tokenizer, b.model.get_input_embeddings().weight)
            return AugmentedBatches(self.train_rows, lambda rows: self.task.encode(rows, b.tokenizer, self.labels,
                                                                                   b.max_length),
                                    synonyms, config.augment_rate, config.batch_size, config.seed, pad_id)
        return FeatureBatches(train_features, config.batch_size, config.seed, pad_id)


def train(request: TrainRequest, step_callbacks=()) -> dict:
    """Train and save; under torchrun every rank calls this, and only rank 0 writes the run directory."""
    ranks = distributed.from_environment()
    out = Path(request.out_dir)
    kind = SingleTask(request)
    check_output_dir(out, request.resume, request.overwrite, ranks)
    built = build_run(kind, request.config, request.base_int8)
    if kind.initial and not request.resume:
        kind.initial.load_into(built.model, built.method, built.base_fingerprint)
    prepared = prepare_training(built, ranks)
    built, task, method, cfg = prepared.built, kind.task, prepared.built.method, prepared.built.config
    settings = {**task.run_settings(kind.train_rows),
                **({BASE_INT8: request.base_int8} if request.base_int8 else {})}
    config = run_config(task, method, request.model, built.base_fingerprint, built.backbone, kind.labels, settings)
    settings = run_settings(request, method, built.backbone, built.base_fingerprint)
    work = open_work_dir(out, request.resume, settings) if ranks.is_main else work_dir_for(out)
    ranks.barrier()  # the other ranks read the work directory rank 0 has just prepared
    peak_rss = PeakMemory()
    trainer = prepared.trainer(work, ranks, [peak_rss, *step_callbacks])
    trainer.run_settings = settings
    if kind.recipe.name == "contrastive":
        summary = fit_contrastive(built.model, method, task, built.params, prepared.train_features,
                                  prepared.dev_features, cfg, built.backbone.tokenizer.pad_token_id, kind.labels,
                                  trainer.metrics_path, request.contrastive, trainer.step_callbacks,
                                  given_lr=request.config.lr)
    else:
        head_seconds = 0.0
        if kind.recipe.head_start and not (request.resume or kind.initial):
            started = time.perf_counter()
            small_data.start_head(built.model, prepared.train_features, built.backbone.tokenizer.pad_token_id,
                                  len(kind.labels), cfg.seed)
            head_seconds = time.perf_counter() - started
        summary = trainer.fit(prepared.source, prepared.dev_features, resume=request.resume)
        if head_seconds:  # training time includes the head's start
            summary.update(train_seconds=round(summary["train_seconds"] + head_seconds, 2),
                           head_start_seconds=round(head_seconds, 2))
    summary["recipe"] = kind.recipe.as_dict()
    chance = check_chance(task, built.model, summary, prepared.train_features, prepared.dev_features,
                          built.backbone.tokenizer.pad_token_id, kind.labels, cfg.batch_size)
    if chance and ranks.is_main:
        print(f"warning: {chance}", file=sys.stderr)
    if prepared.dev_features:  # settings chosen on dev after training (multilabel's threshold)
        tuned = task.tuned_settings(lambda: trainer.evaluation_outputs(prepared.dev_features), prepared.dev_features,
                                    kind.labels)
        config.update(tuned)
        summary.update(tuned)
    built.model.cpu()
    summary.update(built.parameter_counts)
    summary.update(model_weight_bytes=built.model_weight_bytes, train_peak_rss_bytes=peak_rss.peak,
                   base_int8=request.base_int8, processes=ranks.world_size)
    if not ranks.is_main:
        return summary
    adapter_path = save_adapter(work, built.model, method, config)
    summary.update({"prepare_seconds": round(prepared.prepare_seconds, 2), "adapter_bytes": adapter_path.stat().st_size,
                    "train_examples": len(prepared.train_features), "dev_examples": len(prepared.dev_features),
                    "lr": summary.get("contrastive", {}).get("lr", cfg.lr),  # the pair phase scales its own
                    "method": method.name, "task": task.name})
    write_json(work / "metrics.json", summary)
    write_json(work / "train_config.json", {**cfg.__dict__, "train": str(request.train_path),
                                            "dev": request.dev_path, "options": request.options})
    if request.flags is not None:
        write_text(work / "train_config.yaml", yaml.safe_dump(request.flags, sort_keys=False))
    commit_run(work, out)
    return summary


def run_settings(request: TrainRequest, method, backbone, base_fingerprint: str) -> dict:
    """Everything that determines the run, recorded in its checkpoints: a resume must match it."""
    return {"task": request.task, "method": method.name, "options": method.options_dict(), "model": request.model,
            "base_fingerprint": base_fingerprint, "train_data": data_identity(request.train_path),
            "dev_data": data_identity(request.dev_path), "max_train_examples": request.max_train_examples,
            "dev_fraction": request.dev_fraction, "max_length": backbone.max_length, "pooling": backbone.pooling,
            "read_options": request.read_options, BASE_INT8: request.base_int8, "few_shot": request.few_shot,
            "init_adapter": request.init_adapter, **config_settings(request.config)}


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
