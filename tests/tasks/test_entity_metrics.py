import pytest
from seqeval.metrics import f1_score, precision_score, recall_score

from slimtune.data.tag_schemes import repair
from slimtune.tasks.entity_metrics import entity_scores

# Gold entities: PER 0-2, LOC 3, ORG 5, then MISC 0-3.
GOLD = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"], ["B-MISC", "I-MISC", "I-MISC"]]
# Predicted: PER cut short (partial span), LOC typed as ORG (type mismatch), ORG and MISC exact.
PREDICTED = [["B-PER", "O", "O", "B-ORG", "O", "B-ORG"], ["B-MISC", "I-MISC", "I-MISC"]]


def test_partial_and_mistyped_spans_count_as_both_errors():
    scores = entity_scores(GOLD, PREDICTED)
    # 4 gold, 4 predicted, 2 exact matches
    assert scores["precision"] == pytest.approx(0.5) and scores["recall"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx(0.5)
    assert scores["token_accuracy"] == pytest.approx(7 / 9)
    assert scores["per_type"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "MISC": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        "ORG": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
        "PER": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
    }


@pytest.mark.parametrize("gold,predicted,expected_f1", [
    (GOLD, PREDICTED, 0.5),
    (GOLD, GOLD, 1.0),
    ([["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-PER", "O"]], 0.0),  # boundary off by one
    ([["B-PER", "B-PER"]], [["B-PER", "I-PER"]], 0.0),  # two entities read as one
    ([["O", "B-LOC", "I-LOC"]], [["O", "I-LOC", "I-LOC"]], 1.0),  # a stray I- opens an entity, as in conlleval
    ([["O", "O"]], [["B-LOC", "O"]], 0.0),
])
def test_agrees_with_seqeval_on_repaired_predictions(gold, predicted, expected_f1):
    scores = entity_scores(gold, [repair(p) for p in predicted])
    assert scores["f1"] == pytest.approx(expected_f1)
    assert scores["f1"] == pytest.approx(f1_score(gold, predicted))
    assert scores["precision"] == pytest.approx(precision_score(gold, predicted, zero_division=0))
    assert scores["recall"] == pytest.approx(recall_score(gold, predicted, zero_division=0))
