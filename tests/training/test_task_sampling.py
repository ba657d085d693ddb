from collections import Counter

import pytest

from slimtune.errors import SlimtuneError
from slimtune.training.task_sampling import MultiTaskBatches, batch_counts, task_probabilities


def features(n: int, offset: int = 0) -> list[dict]:
    return [{"input_ids": [1] * (3 + (i + offset) % 7), "labels": i} for i in range(n)]


def test_proportional_and_temperature_probabilities():
    assert task_probabilities({"a": 300, "b": 100}, "proportional") == pytest.approx({"a": 0.75, "b": 0.25})
    p = task_probabilities({"a": 300, "b": 100}, "temperature", temperature=2)
    assert p["a"] / p["b"] == pytest.approx(3 ** 0.5)  # p ∝ n^(1/T)
    uniform = task_probabilities({"a": 300, "b": 100}, "temperature", temperature=1e6)
    assert uniform["a"] == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(SlimtuneError, match="temperature"):
        task_probabilities({"a": 1}, "temperature", temperature=0)
    with pytest.raises(SlimtuneError, match="proportional"):
        task_probabilities({"a": 1}, "uniform")


def test_batch_counts_round_by_largest_remainder_to_the_total():
    assert batch_counts({"a": 0.5, "b": 0.3, "c": 0.2}, 7) == {"a": 4, "b": 2, "c": 1}  # 3.5, 2.1, 1.4
    assert sum(batch_counts({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 10).values()) == 10


def test_proportional_epoch_draws_every_example_once_in_a_seeded_order():
    data = {"big": features(300), "small": features(100, offset=3)}
    source = MultiTaskBatches(data, 10, seed=0, pad_id=0, probabilities=task_probabilities(
        {k: len(v) for k, v in data.items()}, "proportional"))
    epoch = source.epoch(0)
    assert len(epoch) == source.batches_per_epoch == 40
    assert Counter(name for name, _ in epoch) == {"big": 30, "small": 10}
    for name, rows in data.items():
        drawn = sorted(i for task, batch in epoch if task == name for i in batch)
        assert drawn == list(range(len(rows)))
    assert source.epoch(0) == epoch and source.epoch(1) != epoch  # deterministic per (seed, epoch)
    names = [name for name, _ in epoch]
    assert sum(a != b for a, b in zip(names, names[1:])) > 5  # interleaved, not one task after the other
    rows = source.rows(epoch[0])
    assert len(rows) == len(epoch[0][1]) and all(row["task"] == epoch[0][0] for row in rows)
    batch = source.collate(rows[1:])  # a rank's share of the rows
    assert batch["task"] == epoch[0][0] and batch["input_ids"].shape[0] == len(rows) - 1


def test_temperature_over_samples_the_small_task_which_cycles_through_its_data():
    data = {"big": features(300), "small": features(100, offset=3)}
    probabilities = task_probabilities({k: len(v) for k, v in data.items()}, "temperature", temperature=2)
    source = MultiTaskBatches(data, 10, seed=0, pad_id=0, probabilities=probabilities)
    epochs = [source.epoch(e) for e in range(3)]
    assert Counter(name for name, _ in epochs[0]) == {"big": 25, "small": 15}  # 40·0.634 = 25.4, 40·0.366 = 14.6
    # the small task's stream: every pass over its data is complete before the next begins
    small = [i for epoch in epochs for task, batch in epoch if task == "small" for i in batch]
    for start in range(0, 400, 100):
        assert sorted(small[start:start + 100]) == list(range(100))
    # the big task continues where it stopped: its first 30 batches (one pass) hold every example once
    big = [batch for epoch in epochs for task, batch in epoch if task == "big"]
    assert sorted(i for batch in big[:30] for i in batch) == list(range(300))
