"""Choosing a training recipe that works on a small data set, and saying when a run learned nothing.

Below SMALL_DATA_ROWS training rows the standard recipe (3 epochs of batch 32, a dev split carved from train)
gives a few optimizer steps and a dev set of a handful of rows: a few dozen rows end at chance level. There:

- no dev split is carved from train: dev comes from --dev only, and without one the run trains a fixed number
  of steps and keeps the final weights;
- sentence-level tasks (classify) with at most CONTRASTIVE_ROWS_PER_CLASS rows per class whose method adapts
  the encoder use the contrastive few-shot recipe by default (`--few-shot auto`; training/contrastive.py), which
  measured better at 8 and 16 per class, and, once its lr scales with its steps, level with or better than the
  supervised one at 64 (docs/results.md, "Few-shot"); more rows per class were not measured;
- otherwise (`--few-shot supervised`, token-level tasks, methods that train only the head) the supervised recipe
  takes a batch of at most an eighth of the rows (at least 4), so a pass has ≥ 8 batches, and makes several
  passes over the data in each epoch so the run makes at least MIN_STEPS optimizer steps whatever --epochs says;
  with one label per text its head starts as a logistic regression fitted on the untrained encoder's pooled
  vectors (`start_head`, a linear probe before fine-tuning) instead of at random, which measured better on a dev
  split carved from the training pool at 8, 16 and 64 per class (docs/results.md, "Few-shot").

Both small-data recipes configure the method with its small-data defaults (`Method.task_defaults[task]
["small_data"]`; LoRA on classify: query/value rather than every block linear, measured better at 64 per class).
`--few-shot off` keeps the standard recipe whatever the size: the flags as given, dev carved when --dev is missing.
`train()` prints `Recipe.line()` once, and records the recipe in metrics.json.
"""

import math
from collections import Counter
from dataclasses import dataclass

from slimtune.errors import SlimtuneError
from slimtune.training.batch_source import BatchSource
from slimtune.training.contrastive import ContrastiveConfig, embed_rows, fit_head

SMALL_DATA_ROWS = 500  # fewer training rows than this: the small-data recipes
MIN_STEPS = 200  # optimizer steps the supervised small-data recipe makes at least
CONTRASTIVE_ROWS_PER_CLASS = 64  # auto: contrastive up to this many training rows per class (on average)
FEW_SHOT_MODES = ("auto", "contrastive", "supervised", "off")


@dataclass
class Recipe:
    name: str  # "standard", "small-data" or "contrastive"
    reason: str
    batch_size: int
    passes_per_epoch: int = 1  # passes over the training rows in one of the trainer's epochs
    steps: int = 0  # optimizer steps the run will make (supervised small-data recipe)
    epochs: int = 0  # the trainer's epochs (--epochs), each of passes_per_epoch passes
    selection: str = ""  # how the kept weights are chosen (small-data recipes)
    head_start: str = ""  # "logistic": the head starts as a regression on the untrained encoder's vectors

    def line(self) -> str:
        details = self.selection
        if self.steps:
            details = (f"batch {self.batch_size}, {self.passes_per_epoch} passes per epoch × {self.epochs} epochs = "
                       f"{self.steps} optimizer steps (at least {MIN_STEPS}); "
                       + ("head started from a logistic regression on the untrained encoder's vectors; "
                          if self.head_start else "") + details)
        return f"recipe: {self.name} ({self.reason}){': ' + details if details else ''}"

    def as_dict(self) -> dict:
        return {"name": self.name, "reason": self.reason, "batch_size": self.batch_size,
                "passes_per_epoch": self.passes_per_epoch, **({"steps": self.steps} if self.steps else {}),
                **({"head_start": self.head_start} if self.head_start else {})}

    def repeat(self, source: BatchSource, config) -> BatchSource:
        """`source` (batches of this recipe's size: plain, augmented or packed) repeated so that the supervised
        small-data recipe makes at least MIN_STEPS optimizer steps whatever --epochs says; sets the passes and
        steps from the batches `source` really makes (packing makes fewer than one a batch of rows)."""
        if self.name != "small-data":
            return source
        self.plan_steps(source.batches_per_epoch, config)
        return RepeatedPasses(source, self.passes_per_epoch) if self.passes_per_epoch > 1 else source

    def plan_steps(self, batches_per_pass: int, config) -> None:
        """Passes per epoch and total steps for `batches_per_pass` batches in one pass over the rows."""
        steps_per_pass = math.ceil(batches_per_pass / config.grad_accum)
        self.epochs = config.epochs
        self.passes_per_epoch = max(1, math.ceil(MIN_STEPS / (steps_per_pass * config.epochs)))
        self.steps = steps_per_pass * self.passes_per_epoch * config.epochs


def is_small(n_rows: int, few_shot: str = "auto") -> bool:
    return n_rows < SMALL_DATA_ROWS and few_shot != "off"


def takes_small_data_defaults(n_rows: int, few_shot: str) -> bool:
    """Whether `choose_recipe` will pick a small-data recipe (supervised small-data or contrastive, which
    --few-shot contrastive forces at any size), so the method is configured with its small-data defaults."""
    return is_small(n_rows, few_shot) or few_shot == "contrastive"


def sentence_level(features: list[dict]) -> bool:
    """Whether each row has one label (classification) rather than one per token."""
    return bool(features) and isinstance(features[0].get("labels"), int)


def choose_recipe(few_shot: str, n_rows: int, sentence_labels: bool, adapts_encoder: bool, has_dev: bool,
                  config, distributed: bool = False, resume: bool = False, classes: int = 2) -> Recipe:
    """The recipe for `n_rows` training rows; `config` is the run's TrainConfig (epochs, batch size, accumulation).

    The contrastive recipe runs on one process and writes no checkpoints, so `auto` leaves it out under
    --nproc and --resume (a run that has a checkpoint to resume was a supervised one), and where the run asks for
    what only the supervised loop does (`TrainConfig.loop_only_flags`: --augment, --adversarial, ...), which
    `--few-shot contrastive` refuses rather than ignores.
    """
    if few_shot not in FEW_SHOT_MODES:
        raise SlimtuneError(f"unknown --few-shot {few_shot!r}; choose from {list(FEW_SHOT_MODES)}")
    small = is_small(n_rows)
    size = f"{n_rows} training rows {'<' if small else '≥'} {SMALL_DATA_ROWS}"
    if few_shot == "off":
        return Recipe("standard", f"--few-shot off; {size}", config.batch_size)
    loop_only = config.loop_only_flags()
    selection = "dev from --dev" if has_dev else "no dev split carved from train; final weights kept"
    if few_shot == "contrastive":
        if not sentence_labels:
            raise SlimtuneError("--few-shot contrastive needs one label per text (task classify)")
        if not adapts_encoder:
            raise SlimtuneError("--few-shot contrastive needs a method that trains encoder weights "
                                "(lora, bitfit, adapter, full, ...); this one trains only the head")
        if distributed:
            raise SlimtuneError("--few-shot contrastive runs on one process; drop --nproc")
        if resume:
            raise SlimtuneError("--few-shot contrastive writes no checkpoints to resume; run it again "
                                "(it takes seconds to minutes)")
        if loop_only:
            raise SlimtuneError(f"--few-shot contrastive does not do {', '.join(loop_only)} (the supervised "
                                "recipes do); drop it or use --few-shot supervised")
        return Recipe("contrastive", f"--few-shot contrastive; {size}", config.batch_size, selection=selection)
    per_class = n_rows / max(classes, 1)
    contrastive_fits = per_class <= CONTRASTIVE_ROWS_PER_CLASS and sentence_labels and adapts_encoder
    one_fresh_process = not (distributed or resume)
    if few_shot == "auto" and small and contrastive_fits and one_fresh_process and not loop_only:
        return Recipe("contrastive", f"{size}, {per_class:.0f} per class ≤ {CONTRASTIVE_ROWS_PER_CLASS}, one label "
                      "per text, a method that adapts the encoder", config.batch_size, selection=selection)
    if not small:
        return Recipe("standard", size, config.batch_size)
    batch_size = min(config.batch_size, max(4, n_rows // 8))
    if few_shot == "supervised":
        why = size
    elif contrastive_fits and one_fresh_process and loop_only:
        why = f"{size}; {', '.join(loop_only)} given, which only this recipe does"
    else:
        why = (f"{size}; contrastive needs ≤ {CONTRASTIVE_ROWS_PER_CLASS} rows per class, one label per text, a method "
               "that adapts the encoder, one process and no --resume")
    recipe = Recipe("small-data", why, batch_size, selection=selection,
                    head_start="logistic" if sentence_labels else "")
    recipe.plan_steps(math.ceil(n_rows / batch_size), config)  # set again by `repeat` from the real batches
    return recipe


def start_head(model, features: list[dict], pad_id: int, num_labels: int, seed: int) -> None:
    """Set the task head to a logistic regression fitted on the pooled vectors [N, H] of `features` under the
    model as it is (before fine-tuning): a few dozen rows then start from a sensible classifier, not a random one,
    and the first steps adapt the encoder instead of undoing the head's noise."""
    fit_head(model, embed_rows(model, features, pad_id), [f["labels"] for f in features], num_labels,
             ContrastiveConfig.head_c, seed)


class RepeatedPasses(BatchSource):
    """`source` with each epoch made of `passes` of its own epochs (epoch e: its epochs e·passes, …,
    e·passes + passes − 1), so a small data set gets the recipe's steps whatever batches `source` makes: plain,
    re-augmented every pass (--augment) or packed. An item is its batch's rows, read when its pass is drawn (an
    augmenting source re-encodes its rows every epoch); deterministic per epoch, as resuming needs."""

    def __init__(self, source: BatchSource, passes: int):
        self.source, self.passes = source, passes
        self.batches_per_epoch = source.batches_per_epoch * passes

    def epoch(self, epoch: int) -> list[list[dict]]:
        items = []
        for p in range(self.passes):
            items += [self.source.rows(item) for item in self.source.epoch(epoch * self.passes + p)]
        return items

    def rows(self, item: list[dict]) -> list[dict]:
        return item

    def collate(self, rows: list[dict]) -> dict:
        return self.source.collate(rows)


def majority_check(summary: dict, train_features: list[dict], scored_features: list[dict], score: float | None,
                   split: str) -> str | None:
    """Record in `summary` whether `score` (accuracy on `scored_features`) beats always predicting the most
    frequent training label; returns a warning line when it does not. Sentence-level labels only."""
    if score is None or not sentence_level(train_features) or not scored_features:
        return None
    majority_label = Counter(f["labels"] for f in train_features).most_common(1)[0][0]
    baseline = sum(f["labels"] == majority_label for f in scored_features) / len(scored_features)
    beats = score > baseline + 1e-9
    summary.update(majority_baseline=round(baseline, 4), beats_majority=beats, majority_checked_on=split)
    if beats:
        return None
    warning = (f"{split} accuracy {score:.4f} never beat the majority class ({baseline:.4f}, always predicting the "
               f"most frequent training label): this run is at chance level")
    summary.setdefault("warnings", []).append(warning)
    return warning
