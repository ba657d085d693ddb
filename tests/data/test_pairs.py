from collections import Counter

import pytest

from slimtune.data.pairs import sample_pairs
from slimtune.errors import SlimtuneError


def test_pairs_are_balanced_and_correctly_labelled():
    labels = ["a"] * 12 + ["b"] * 3 + ["c"] * 5  # unbalanced classes
    pairs = sample_pairs(labels, 400, seed=1)
    assert len(pairs) == 400
    assert sum(p.target for p in pairs) == 200
    for p in pairs:
        assert p.first != p.second
        assert p.target == float(labels[p.first] == labels[p.second])
    anchors = Counter(p.first for p in pairs if p.target == 0.0)
    assert set(anchors) == set(range(20)) and max(anchors.values()) - min(anchors.values()) <= 1
    positive_anchors = Counter(p.first for p in pairs if p.target == 1.0)
    assert max(positive_anchors.values()) - min(positive_anchors.values()) <= 1


def test_pairs_are_seeded():
    labels = [i % 3 for i in range(30)]
    assert sample_pairs(labels, 100, seed=5) == sample_pairs(labels, 100, seed=5)
    assert sample_pairs(labels, 100, seed=5) != sample_pairs(labels, 100, seed=6)


def test_a_lone_row_of_its_class_anchors_only_negative_pairs():
    labels = ["x", "y", "y", "y"]
    pairs = sample_pairs(labels, 40, seed=0)
    assert all(p.target == 0.0 for p in pairs if p.first == 0)
    assert sum(p.target for p in pairs) == 20


@pytest.mark.parametrize("labels", [["a", "a", "a"], ["a", "b", "c"]])
def test_pairs_need_two_classes_and_a_class_of_two(labels):
    with pytest.raises(SlimtuneError):
        sample_pairs(labels, 10, seed=0)
