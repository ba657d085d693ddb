"""Multi-label classification: any number of labels per text (topics, tags, toxicity types).

The label column holds a row's labels separated by "|" ("sports|politics"; empty for none), or in JSONL a list
(["sports", "politics"]). The model has one sigmoid output per label, trained with binary cross-entropy; a label
is predicted when its probability reaches the decision threshold, which is tuned on dev after training
(the best micro-F1 over a grid) and recorded in adapter_config.json as `threshold`.
"""

import torch
import torch.nn.functional as F

from slimtune.data.table import LabelledText, read_labelled_texts
from slimtune.errors import SlimtuneError
from slimtune.models.inference import predict_logits
from slimtune.models.task_models import SequenceClassifier
from slimtune.tasks.base import MULTI_LABEL, LabellingTask, refuse_options
from slimtune.tasks.classify import encode_texts, sort_labels, unknown_label

DEFAULT_THRESHOLD = 0.5
THRESHOLD_GRID = [round(0.05 * i, 2) for i in range(1, 20)]  # 0.05 … 0.95


def label_set_scores(gold: torch.Tensor, predicted: torch.Tensor) -> dict:
    """Micro and macro F1, subset accuracy and per-label precision / recall / F1 / support of multi-hot
    gold and predicted [N, L] (bool), as scikit-learn gives them with zero_division=0."""
    gold, predicted = gold.bool(), predicted.bool()
    hits = (gold & predicted).sum(0).double()  # [L]
    support, chosen = gold.sum(0).double(), predicted.sum(0).double()
    precision = torch.where(chosen > 0, hits / chosen.clamp(min=1), 0.0)
    recall = torch.where(support > 0, hits / support.clamp(min=1), 0.0)
    f1 = torch.where(support + chosen > 0, 2 * hits / (support + chosen).clamp(min=1), 0.0)
    all_hits, all_support, all_chosen = hits.sum().item(), support.sum().item(), chosen.sum().item()
    return {
        "micro_f1": 2 * all_hits / (all_support + all_chosen) if all_support + all_chosen else 0.0,
        "micro_precision": all_hits / all_chosen if all_chosen else 0.0,
        "micro_recall": all_hits / all_support if all_support else 0.0,
        "macro_f1": f1.mean().item(),
        "subset_accuracy": (gold == predicted).all(1).double().mean().item(),
        "per_label": [{"precision": p, "recall": r, "f1-score": f, "support": int(s)}
                      for p, r, f, s in zip(precision.tolist(), recall.tolist(), f1.tolist(), support.tolist())],
    }


class MultiLabelTask(LabellingTask):
    name = "multilabel"
    primary_metric = "micro_f1"
    kind = MULTI_LABEL
    augmentable = True

    def __init__(self):
        self.threshold = DEFAULT_THRESHOLD  # the recorded one once `use_settings` has read an adapter's config

    def read(self, path, text_col=None, label_col=None, **options):
        refuse_options(self.name, options)
        return read_labelled_texts(path, text_col, label_col, label_sets=True)

    def label_names(self, rows):
        labels = sort_labels({label for r in rows for label in r.label})
        if not labels:
            source = rows[0].source if rows and rows[0].source else "the training data"
            raise SlimtuneError(f"{source}: no row has a label; a multi-label classifier needs at least one")
        return labels

    def use_settings(self, config: dict) -> None:
        self.threshold = config.get("threshold") or DEFAULT_THRESHOLD

    def encode(self, rows, tokenizer, labels, max_length):
        index = {name: i for i, name in enumerate(labels)}

        def label_vector(row):
            unknown = [label for label in row.label if label not in index]
            if unknown:
                raise unknown_label(row, unknown[0], labels)
            hot = [0.0] * len(labels)
            for label in row.label:
                hot[index[label]] = 1.0
            return tuple(hot)  # a tuple: pad_batch stacks it [B, L], it pads only token lists

        return encode_texts(rows, tokenizer, max_length, label_vector)

    def build_model(self, backbone, labels):
        return SequenceClassifier(backbone.model, len(labels), backbone.pooling)

    def loss(self, logits, labels):
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))

    def outputs(self, model, features, pad_id, batch_size):
        """Logits per text, as lists of floats: [L] each."""
        return predict_logits(model, features, pad_id, batch_size).tolist()

    def score(self, outputs, features, labels, threshold: float | None = None):
        logits = torch.tensor(outputs)  # [N, L]
        gold = torch.tensor([f["labels"] for f in features])  # [N, L] multi-hot
        threshold = self.threshold if threshold is None else threshold
        scores = label_set_scores(gold > 0.5, logits.sigmoid() >= threshold)
        return {**{k: v for k, v in scores.items() if k != "per_label"},
                "loss": F.binary_cross_entropy_with_logits(logits, gold).item(), "threshold": threshold,
                "per_label": dict(zip(labels, scores["per_label"])), "examples": len(features)}

    def tuned_settings(self, dev_outputs, features, labels) -> dict:
        """The threshold of the best dev micro-F1 (the lowest of ties), from the trained model's dev outputs."""
        outputs = dev_outputs()
        best = max(THRESHOLD_GRID, key=lambda t: (self.score(outputs, features, labels, t)["micro_f1"], -t))
        return {"threshold": best}

    def encode_texts(self, texts, tokenizer, max_length):
        return self.encode([LabelledText(t, None) for t in texts], tokenizer, [], max_length)

    def decode(self, texts, features, outputs, labels, config, **options):
        refuse_options(self.name, options)
        threshold = config.get("threshold") or DEFAULT_THRESHOLD
        out = []
        for row in torch.stack(outputs).sigmoid() if outputs else []:
            out.append({"labels": [name for name, p in zip(labels, row) if p >= threshold],
                        "scores": {name: float(p) for name, p in zip(labels, row)}})
        return out
