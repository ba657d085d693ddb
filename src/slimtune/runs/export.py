"""A merged adapter written as a standalone model directory that plain `transformers` loads (`slimtune merge`).

What is written depends on the kind of task (`Task.kind`): an encoder plus its classifier head, a token
classifier, or a causal LM, each with its tokenizer.
"""

import copy
from pathlib import Path

import torch

from slimtune.atomic import write_json, write_safetensors
from slimtune.errors import SlimtuneError
from slimtune.tasks.base import CLASSIFICATION, GENERATION, MULTI_LABEL, TAGGING

HEAD_USAGE = (
    "model = transformers.AutoModel.from_pretrained(dir); h = model(**batch).last_hidden_state; "
    "pooled = masked mean of h over attention_mask (pooling 'mean'), h[:, 0] ('cls') or pooler_output ('pooler'); "
    "logits = pooled @ weight.T + bias with weight, bias from classifier_head.safetensors"
)


def _classifier(loaded, out: Path, head_notes: dict | None = None) -> None:
    """The encoder in transformers format, plus the pooling and head it needs (see HEAD_USAGE)."""
    backbone = loaded.model.backbone
    backbone.config.id2label = dict(enumerate(loaded.labels))
    backbone.config.label2id = {name: i for i, name in enumerate(loaded.labels)}
    backbone.save_pretrained(out)
    loaded.backbone.tokenizer.save_pretrained(out)
    linear = loaded.model.head[-1]
    write_safetensors(out / "classifier_head.safetensors", {"weight": linear.weight, "bias": linear.bias})
    write_json(out / "classifier_head.json",
               {"pooling": loaded.model.pooling, "labels": loaded.labels, "usage": HEAD_USAGE, **(head_notes or {})})


def _multi_label_classifier(loaded, out: Path) -> None:
    """As `_classifier`, the head read through a sigmoid: each label whose probability reaches the threshold."""
    _classifier(loaded, out, {"activation": "sigmoid", "threshold": loaded.config.get("threshold", 0.5),
                              "multi_label": "labels = those where sigmoid(logits) >= threshold"})


def _token_classifier(loaded, out: Path) -> None:
    """A directory `transformers.AutoModelForTokenClassification` loads, giving the same logits."""
    from transformers import AutoModelForTokenClassification

    backbone = loaded.model.backbone
    config = copy.deepcopy(backbone.config)
    config.id2label = dict(enumerate(loaded.labels))
    config.label2id = {name: i for i, name in enumerate(loaded.labels)}
    config.architectures = None
    model = AutoModelForTokenClassification.from_config(config)
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, torch.nn.Linear):
        raise SlimtuneError(f"{type(model).__name__} has no linear `classifier` head to receive the trained one")
    try:
        model.base_model.load_state_dict(backbone.state_dict())
    except RuntimeError as e:
        raise SlimtuneError(f"the trained encoder does not fit {type(model).__name__}: {e}") from None
    classifier.load_state_dict(loaded.model.head[-1].state_dict())
    model.save_pretrained(out)
    loaded.backbone.tokenizer.save_pretrained(out)


def _causal_lm(loaded, out: Path) -> None:
    """A directory `transformers.AutoModelForCausalLM` loads, with the tokenizer and its chat template."""
    loaded.model.lm.save_pretrained(out)
    loaded.backbone.tokenizer.save_pretrained(out)


EXPORTS = {CLASSIFICATION: _classifier, TAGGING: _token_classifier, GENERATION: _causal_lm,
           MULTI_LABEL: _multi_label_classifier}


def save_merged(loaded, out_dir) -> None:
    """Write `loaded` (its adapter already merged and unwrapped) to `out_dir`."""
    EXPORTS[loaded.task.kind](loaded, Path(out_dir))
