"""Seeded, balanced sentence pairs for contrastive few-shot training (SetFit's pair idea).

Each pair (i, j, target) joins two training rows: target 1.0 when they share a label, 0.0 when not.
Half the pairs are positive and half negative, and every row is the anchor of as many pairs as every
other (±1), so no class or row dominates however the labels are distributed. Partners are drawn at
random (seeded) from the anchor's own class, or from a uniformly drawn other class, then a row of it.
"""

import random
from collections import defaultdict
from dataclasses import dataclass

from slimtune.errors import SlimtuneError


@dataclass(frozen=True)
class Pair:
    first: int  # row index
    second: int  # row index
    target: float  # 1.0: same label, 0.0: different labels


def sample_pairs(labels: list, n_pairs: int, seed: int) -> list[Pair]:
    """`n_pairs` pairs over rows labelled `labels`: n_pairs // 2 positive, the rest negative, shuffled.

    Anchors go round a seeded shuffle of the rows, so each row anchors n_pairs / len(rows) pairs (±1).
    A row whose class has no other member cannot anchor a positive pair; its turn passes to the next row.
    """
    by_class = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    if len(by_class) < 2:
        raise SlimtuneError(f"contrastive pairs need at least two classes; the training data has {len(by_class)}")
    if not any(len(rows) > 1 for rows in by_class.values()):
        raise SlimtuneError("contrastive pairs need a class with at least two examples")
    rng = random.Random(seed)
    order = list(range(len(labels)))
    rng.shuffle(order)
    classes = list(by_class)
    positive_anchors = [i for i in order if len(by_class[labels[i]]) > 1]

    pairs = []
    n_positive = n_pairs // 2
    for k in range(n_positive):
        anchor = positive_anchors[k % len(positive_anchors)]
        partner = rng.choice([j for j in by_class[labels[anchor]] if j != anchor])
        pairs.append(Pair(anchor, partner, 1.0))
    for k in range(n_pairs - n_positive):
        anchor = order[k % len(order)]
        other_class = rng.choice([c for c in classes if c != labels[anchor]])
        pairs.append(Pair(anchor, rng.choice(by_class[other_class]), 0.0))
    rng.shuffle(pairs)
    return pairs
