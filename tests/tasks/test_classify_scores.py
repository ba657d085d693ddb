import random

import pytest
from sklearn.metrics import accuracy_score, classification_report, f1_score

from slimtune.tasks import get_task
from slimtune.tasks.classify import class_scores


@pytest.mark.parametrize("seed", range(5))
def test_scores_equal_scikit_learns_report_including_empty_classes(seed):
    rng = random.Random(seed)
    classes = rng.randint(2, 6)
    gold = [rng.randrange(classes - 1) for _ in range(rng.randint(1, 40))]  # the last class never occurs in gold
    predicted = [rng.randrange(classes) for _ in gold]
    ids = list(range(classes))
    report = classification_report(gold, predicted, labels=ids, output_dict=True, zero_division=0)
    ours = class_scores(gold, predicted, classes)
    for c, scores in enumerate(ours):
        expected = report[str(c)]
        assert scores["support"] == expected["support"]
        assert all(scores[k] == pytest.approx(expected[k], abs=1e-12) for k in ("precision", "recall", "f1-score"))
    logits = [[1.0 if i == p else 0.0 for i in ids] for p in predicted]
    metrics = get_task("classify").score(logits, [{"labels": g} for g in gold], [f"c{i}" for i in ids])
    assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert metrics["macro_f1"] == pytest.approx(f1_score(gold, predicted, labels=ids, average="macro",
                                                         zero_division=0))
