"""Text classification: sentiment, topic, intent — one label per text."""

import torch
import torch.nn.functional as F

from slimtune.data.label_names import apply_label_names
from slimtune.data.table import LabelledText, read_labelled_texts
from slimtune.errors import SlimtuneError
from slimtune.models.inference import predict_logits
from slimtune.models.task_models import SequenceClassifier
from slimtune.tasks.base import CLASSIFICATION, LabellingTask, refuse_options


def sort_labels(labels) -> list[str]:
    """Numeric labels in numeric order, others alphabetically."""
    labels = set(labels)
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


class ClassificationTask(LabellingTask):
    name = "classify"
    primary_metric = "accuracy"
    kind = CLASSIFICATION
    mixable = True
    augmentable = True

    def read(self, path, text_col=None, label_col=None, label_names=None, **options):
        refuse_options(self.name, options)
        rows = read_labelled_texts(path, text_col, label_col)
        return apply_label_names(rows, label_names, path) if label_names else rows

    def label_names(self, rows):
        labels = sort_labels(r.label for r in rows)
        if len(labels) < 2:
            source = rows[0].source if rows and rows[0].source else "the training data"
            raise SlimtuneError(f"{source}: every row has the label {labels[0]!r} (after any --max-train-examples "
                                "sample); a classifier needs at least two labels to learn")
        return labels

    def encode(self, rows, tokenizer, labels, max_length):
        index = {name: i for i, name in enumerate(labels)}

        def label_id(row):
            if row.label not in index:
                raise unknown_label(row, row.label, labels)
            return index[row.label]

        return encode_texts(rows, tokenizer, max_length, label_id)

    def build_model(self, backbone, labels):
        return SequenceClassifier(backbone.model, len(labels), backbone.pooling)

    def loss(self, logits, labels):
        return F.cross_entropy(logits, labels)

    def outputs(self, model, features, pad_id, batch_size):
        """Logits per text, as lists of floats: [C] each."""
        return predict_logits(model, features, pad_id, batch_size).tolist()

    def score(self, outputs, features, labels):
        logits = torch.tensor(outputs)  # [N, C]
        predicted = logits.argmax(-1).tolist()
        gold = [f["labels"] for f in features]
        per_class = class_scores(gold, predicted, len(labels))
        return {
            "accuracy": sum(g == p for g, p in zip(gold, predicted)) / len(gold),
            "macro_f1": sum(c["f1-score"] for c in per_class) / len(per_class),
            "loss": F.cross_entropy(logits, torch.tensor(gold)).item(),
            "per_class": dict(zip(labels, per_class)),
            "examples": len(features),
        }

    def encode_texts(self, texts, tokenizer, max_length):
        return self.encode([LabelledText(t, None) for t in texts], tokenizer, [], max_length)

    def decode(self, texts, features, outputs, labels, config, **options):
        refuse_options(self.name, options)
        out = []
        for row in torch.stack(outputs).softmax(-1) if outputs else []:
            best = int(row.argmax())
            out.append({"label": labels[best], "probability": float(row[best]),
                        "scores": {name: float(p) for name, p in zip(labels, row)}})
        return out


def encode_texts(rows, tokenizer, max_length: int, label_of) -> list[dict]:
    """Each row's token ids (and token type ids) and, where the row has a label, `labels` = label_of(row):
    the one encoding of classify and multilabel, which differ only in what a label becomes."""
    encoded = tokenizer([r.text for r in rows], truncation=True, max_length=max_length)
    features = []
    for i, row in enumerate(rows):
        feature = {k: encoded[k][i] for k in ("input_ids", "token_type_ids") if k in encoded}
        if row.label is not None:
            feature["labels"] = label_of(row)
        features.append(feature)
    return features


def unknown_label(row, label: str, labels: list[str]) -> SlimtuneError:
    """The one-line error for a data row whose label the model does not have, pointing at the row."""
    where = f"{row.source}:{row.line}: " if row.source else ""
    return SlimtuneError(f"{where}label {label!r} is not one of the model's labels {labels}")


def class_scores(gold: list[int], predicted: list[int], classes: int) -> list[dict]:
    """Precision, recall, F1 and support of each class id, as scikit-learn's classification_report gives them with
    zero_division=0 (0 where a ratio has nothing to divide); computed here from the confusion counts because
    importing sklearn.metrics (and scipy with it) took longer than the rest of a short `slimtune eval`."""
    confusion = torch.zeros(classes, classes, dtype=torch.float64)  # [gold, predicted]
    confusion.index_put_((torch.tensor(gold), torch.tensor(predicted)), torch.ones(len(gold), dtype=torch.float64),
                         accumulate=True)
    scores = []
    for c in range(classes):
        hits, support, chosen = confusion[c, c].item(), confusion[c].sum().item(), confusion[:, c].sum().item()
        scores.append({"precision": hits / chosen if chosen else 0.0, "recall": hits / support if support else 0.0,
                       "f1-score": 2 * hits / (support + chosen) if support + chosen else 0.0,
                       "support": int(support)})
    return scores
