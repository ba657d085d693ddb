"""The interfaces the trainer, the run preparation, the server and the CLI use to stay task-agnostic.

`Objective` is what the trainer needs (a `Task`, or the multi-task mixture of tasks/multitask); `Task` is one
kind of problem, whole; `LabellingTask` is a task whose predictions label the input (classify, ner), predicted as
features → forward passes → decoded labels.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from slimtune.data.batching import LABEL_PAD
from slimtune.errors import SlimtuneError

CLASSIFICATION, TAGGING, GENERATION = "classification", "tagging", "generation"  # what a task's predictions are
MULTI_LABEL = "multi-label"  # a set of labels per text


def refuse_options(task_name: str, options: dict) -> None:
    """Reader or output flags given to a task that has no use for them are an error, not ignored."""
    given = [name for name, value in options.items() if value is not None]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise SlimtuneError(f"{flags} does not apply to task {task_name}")


class Objective(Protocol):
    """What the trainer trains against: one `Task`, or several tasks' mixture (tasks/multitask/objective.py)."""

    name: str
    primary_metric: str  # higher is better; drives early stopping and best-weight selection

    def batch_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor: ...

    def loss_units(self, features: list[dict]) -> int: ...

    def loss_for(self, batch: dict) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]: ...

    def gathered_outputs(self, model: nn.Module, features, pad_id: int, batch_size: int, on_shares): ...

    def score(self, outputs, features, labels) -> dict: ...

    def own_learning_rates(self) -> list[tuple[nn.Parameter, float]]: ...

    def step_record(self, step: int) -> dict | None: ...


class Task(ABC):
    """One kind of problem: how its rows are read, encoded, modelled, scored and predicted."""

    name: str
    primary_metric: str  # higher is better; drives early stopping and best-weight selection
    kind: str  # CLASSIFICATION, TAGGING or GENERATION
    mixable: bool = False  # can share one encoder base with other tasks in a multi-task run
    adversarial: bool = False  # can train with input-embedding perturbations (--adversarial)
    augmentable: bool = False  # its rows are texts EDA can rewrite (--augment): `row.text`, replaced by dataclasses

    @property
    def generates_text(self) -> bool:
        """Its predictions are generated text (`slimtune generate`, POST /v1/generate), not labels of the input."""
        return self.kind == GENERATION

    def check_method(self, method) -> None:
        """Refuse a method that does not serve this task: methods declare their tasks (`Method.tasks`)."""
        method.check_task(self.name)

    def load_backbone(self, spec, pooling=None, max_length=None):
        """The pretrained model this task builds on (an encoder by default)."""
        from slimtune.models.loading import load_backbone

        return load_backbone(spec, pooling, max_length)

    @abstractmethod
    def read(self, path, **options) -> list:
        """Rows of a data file; `options` are the reader flags (columns, tag scheme), None when not given."""

    @abstractmethod
    def label_names(self, rows: list) -> list[str]:
        """The labels the model predicts, from the training rows."""

    def run_settings(self, train_rows: list) -> dict:
        """What else adapter_config.json must record to use the adapter later (e.g. a tag scheme)."""
        return {}

    def tuned_settings(self, dev_outputs: Callable[[], list], features: list[dict], labels: list[str]) -> dict:
        """Settings tuned on the trained model's outputs on the dev `features` (a decision threshold), recorded
        in adapter_config.json beside `run_settings`; `dev_outputs()` computes those outputs when needed."""
        return {}

    def use_settings(self, config: dict) -> None:
        """Take up what a loaded adapter's config recorded (run_settings, tuned_settings) before scoring."""

    @abstractmethod
    def encode(self, rows: list, tokenizer, labels: list[str], max_length: int) -> list[dict]:
        """Tokenised features; each has `input_ids` and, when labelled, `labels`."""

    @abstractmethod
    def build_model(self, backbone, labels: list[str]) -> nn.Module:
        """The task model over `backbone`: its forward takes a padded batch and returns logits."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean training loss of a batch's logits against its labels."""

    def batch_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """The training loss of one padded batch; a multi-task mixture also reads which task the batch is from."""
        return self.loss(logits, batch["labels"])

    def loss_for(self, batch: dict):
        """The plain loss function `(logits, labels)` of the task a batch is from (data-dependent method set-up)."""
        return self.loss

    def loss_units(self, features: list[dict]) -> int:
        """How many terms `loss` averages over for these rows: labelled positions (LABEL_PAD ignored).

        Distributed training weights each rank's mean loss by its share of the units, so
        the averaged gradient is that of the global batch's mean loss.
        """
        units = 0
        for feature in features:
            labels = feature["labels"]
            units += sum(label != LABEL_PAD for label in labels) if isinstance(labels, list) else 1
        return units

    def own_learning_rates(self) -> list[tuple[nn.Parameter, float]]:
        """Parameters of the objective itself that train at their own peak learning rate, without weight decay."""
        return []

    def step_record(self, step: int) -> dict | None:
        """A metrics.jsonl record after optimizer step `step`, if the objective keeps one."""
        return None

    @abstractmethod
    def outputs(self, model: nn.Module, features: list[dict], pad_id: int, batch_size: int) -> list:
        """The model's output per feature, in feature order, on the CPU (distributed evaluation gathers them)."""

    def gathered_outputs(self, model: nn.Module, features: list[dict], pad_id: int, batch_size: int,
                         on_shares) -> list:
        """`outputs` of all `features`, each process computing its share: `on_shares(rows, compute)` runs
        `compute` on this process's share of `rows` and returns everyone's outputs in row order."""
        return on_shares(features, lambda rows: self.outputs(model, rows, pad_id, batch_size))

    @abstractmethod
    def score(self, outputs: list, features: list[dict], labels: list[str]) -> dict:
        """Metrics from `outputs` of all of `features`."""

    def evaluate(self, model: nn.Module, features: list[dict], pad_id: int, batch_size: int, labels: list[str]) -> dict:
        return self.score(self.outputs(model, features, pad_id, batch_size), features, labels)

    @abstractmethod
    def predict(self, loaded, texts: list[str], batch_size: int, **options) -> list[dict]:
        """One prediction per raw text with a loaded adapter; `options` are the output flags (tag scheme)."""

    def predict_file(self, loaded, in_path, out_path, batch_size: int, **options) -> int:
        """Write a copy of a data file with predictions added; returns the number of rows predicted."""
        raise SlimtuneError(f"task {self.name} cannot annotate a data file")


class LabellingTask(Task):
    """A task whose predictions label the input: features from texts, one forward pass, labels decoded."""

    adversarial = True

    @abstractmethod
    def encode_texts(self, texts: list[str], tokenizer, max_length: int) -> list[dict]:
        """Model features for raw texts to predict; a task may give one text several features (windows)."""

    @abstractmethod
    def decode(self, texts: list[str], features: list[dict], outputs: list[torch.Tensor], labels: list[str],
               config: dict, **options) -> list[dict]:
        """One prediction per text from `outputs[i]`, the unpadded logits of `features[i]` ([C] or [T_i, C]).

        Scores are full-precision floats; rounding them is for whoever prints them.
        `config` is the adapter's config (settings the task recorded at training).
        """

    def predict(self, loaded, texts: list[str], batch_size: int, **options) -> list[dict]:
        """`encode_texts`, forward passes, `decode`."""
        from slimtune.models.inference import feature_outputs

        tokenizer = loaded.backbone.tokenizer
        features = self.encode_texts(texts, tokenizer, loaded.backbone.max_length)
        outputs = feature_outputs(loaded.model, features, tokenizer.pad_token_id, batch_size)
        return self.decode(texts, features, outputs, loaded.labels, loaded.config, **options)
