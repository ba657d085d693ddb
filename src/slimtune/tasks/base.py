"""The interface the trainer and CLI use to stay task-agnostic."""

import torch
from torch import nn

from slimtune.data.batching import LABEL_PAD
from slimtune.errors import SlimtuneError


def refuse_options(task_name: str, options: dict) -> None:
    """Reader or output flags given to a task that has no use for them are an error, not ignored."""
    given = [name for name, value in options.items() if value is not None]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise SlimtuneError(f"{flags} does not apply to task {task_name}")


class Task:
    name: str
    primary_metric: str  # higher is better; drives early stopping and best-weight selection

    def check_method(self, method) -> None:
        """Refuse a method that does not serve this task: methods declare their tasks (`Method.tasks`)."""
        method.check_task(self.name)

    def load_backbone(self, spec, pooling=None, max_length=None):
        """The pretrained model this task builds on (an encoder by default)."""
        from slimtune.models.loading import load_backbone

        return load_backbone(spec, pooling, max_length)

    def read(self, path, **options) -> list:
        """Rows of a data file; `options` are the reader flags (columns, tag scheme), None when not given."""
        raise NotImplementedError

    def label_names(self, rows: list) -> list[str]:
        raise NotImplementedError

    def run_settings(self, train_rows: list) -> dict:
        """What else adapter_config.json must record to use the adapter later (e.g. a tag scheme)."""
        return {}

    def encode(self, rows: list, tokenizer, labels: list[str], max_length: int) -> list[dict]:
        """Tokenised features; each has `input_ids` and, when labelled, `labels`."""
        raise NotImplementedError

    def build_model(self, backbone, labels: list[str]) -> nn.Module:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def batch_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """The training loss of one padded batch; a multi-task mixture also reads which task the batch is from."""
        return self.loss(logits, batch["labels"])

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

    def outputs(self, model: nn.Module, features: list[dict], pad_id: int, batch_size: int) -> list:
        """The model's output per feature, in feature order, on the CPU (distributed evaluation gathers them)."""
        raise NotImplementedError

    def score(self, outputs: list, features: list[dict], labels: list[str]) -> dict:
        """Metrics from `outputs` of all of `features`."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, features: list[dict], pad_id: int, batch_size: int, labels: list[str]) -> dict:
        return self.score(self.outputs(model, features, pad_id, batch_size), features, labels)

    def encode_texts(self, texts: list[str], tokenizer, max_length: int) -> list[dict]:
        """Model features for raw texts to predict; a task may give one text several features (windows)."""
        raise NotImplementedError

    def decode(self, texts: list[str], features: list[dict], outputs: list[torch.Tensor], labels: list[str],
               config: dict, **options) -> list[dict]:
        """One prediction per text from `outputs[i]`, the unpadded logits of `features[i]` ([C] or [T_i, C]).

        Scores are full-precision floats; rounding them is for whoever prints them.
        `config` is the adapter's config (settings the task recorded at training).
        """
        raise NotImplementedError

    def predict(self, loaded, texts: list[str], batch_size: int, **options) -> list[dict]:
        """Predictions for raw texts with a loaded adapter: `encode_texts`, forward passes, `decode`."""
        from slimtune.training.inference import feature_outputs

        tokenizer = loaded.backbone.tokenizer
        features = self.encode_texts(texts, tokenizer, loaded.backbone.max_length)
        outputs = feature_outputs(loaded.model, features, tokenizer.pad_token_id, batch_size)
        return self.decode(texts, features, outputs, loaded.labels, loaded.config, **options)

    def predict_file(self, loaded, in_path, out_path, batch_size: int, **options) -> int:
        """Write a copy of a data file with predictions added; returns the number of rows predicted."""
        raise SlimtuneError(f"task {self.name} cannot annotate a data file")


def score_table(heading: str, rows: dict[str, tuple[float, float, float, int]]) -> list[str]:
    """Aligned lines of precision / recall / F1 / support, one per class or entity type."""
    lines = [f"{heading:<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, (precision, recall, f1, support) in rows.items():
        lines.append(f"{name:<20}{precision:>10.4f}{recall:>10.4f}{f1:>10.4f}{int(support):>10}")
    return lines
