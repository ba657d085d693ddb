"""Entity-level scores as the CoNLL shared task defines them, computed by seqeval.

An entity counts as found only when its type and both boundaries match, so a
partial span or a wrong type is both a false positive and a false negative.
"""

import warnings

_AVERAGES = ("micro avg", "macro avg", "weighted avg")


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Micro precision / recall / F1 over entities, per-type scores, and word-level tag accuracy.

    Both arguments are per-sentence IOB2 tag lists of equal shape.
    """
    # imported here: seqeval brings scikit-learn and scipy (seconds), which only ner's scoring needs
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    with warnings.catch_warnings():  # numpy warns on the macro average when there is no entity at all
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {
        name: {"precision": float(row["precision"]), "recall": float(row["recall"]),
               "f1": float(row["f1-score"]), "support": int(row["support"])}
        for name, row in sorted(report.items()) if name not in _AVERAGES
    }
    return {
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
        "f1": float(f1_score(gold, predicted, zero_division=0)),
        "token_accuracy": float(accuracy_score(gold, predicted)),
        "per_type": per_type,
    }
