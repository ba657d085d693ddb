"""Which task each training batch comes from.

proportional: pᵢ ∝ nᵢ (examples); temperature T: pᵢ ∝ nᵢ^(1/T), so T=1 is
proportional and large T approaches uniform, lifting small tasks. An epoch is
as many batches as the tasks have together (N = Σ ⌈nᵢ/batch⌉); task i gets
round(pᵢ·N) of them (largest remainders, so they sum to N) in a seeded random
order. Each task reads its own length-grouped batches as one endless stream,
reshuffled at every pass over its data, so an over-sampled small task cycles
through its data and an under-sampled large one continues where it stopped.
"""

import math
import random

from slimtune.data.batching import length_grouped_batches, pad_batch
from slimtune.errors import SlimtuneError
from slimtune.training.batch_source import BatchSource

SAMPLINGS = ("proportional", "temperature")


def task_probabilities(sizes: dict[str, int], mode: str, temperature: float = 1.0) -> dict[str, float]:
    if mode not in SAMPLINGS:
        raise SlimtuneError(f"unknown task sampling {mode!r}; choose from {', '.join(SAMPLINGS)}")
    if not temperature > 0:
        raise SlimtuneError(f"--temperature must be positive, got {temperature}")
    exponent = 1.0 if mode == "proportional" else 1.0 / temperature
    mass = {name: n ** exponent for name, n in sizes.items()}
    total = sum(mass.values())
    return {name: m / total for name, m in mass.items()}


def batch_counts(probabilities: dict[str, float], total: int) -> dict[str, int]:
    """round(pᵢ·total) per task by largest remainders, summing to `total`."""
    exact = {name: p * total for name, p in probabilities.items()}
    counts = {name: math.floor(x) for name, x in exact.items()}
    by_remainder = sorted(exact, key=lambda name: counts[name] - exact[name])
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


class MultiTaskBatches(BatchSource):
    """Items are (task name, row indices); rows carry `task` (for `MultiTask.loss_units`), and so do collated
    batches (for the model and the loss)."""

    def __init__(self, features: dict[str, list[dict]], batch_size: int, seed: int, pad_id: int,
                 probabilities: dict[str, float]):
        self.features = {name: [{**f, "task": name} for f in rows] for name, rows in features.items()}
        self.batch_size, self.seed, self.pad_id = batch_size, seed, pad_id
        self.lengths = {name: [len(f["input_ids"]) for f in rows] for name, rows in features.items()}
        self.passes = {name: math.ceil(len(rows) / batch_size) for name, rows in features.items()}  # batches per pass
        self.batches_per_epoch = sum(self.passes.values())
        self.counts = batch_counts(probabilities, self.batches_per_epoch)

    def epoch(self, epoch: int) -> list[tuple[str, list[int]]]:
        order = [name for name, count in self.counts.items() for _ in range(count)]
        random.Random(f"{self.seed}:tasks:{epoch}").shuffle(order)
        streams = {name: iter(self._stream(name, epoch * count, count)) for name, count in self.counts.items()}
        return [(name, next(streams[name])) for name in order]

    def _stream(self, name: str, start: int, count: int) -> list[list[int]]:
        """Batches start..start+count-1 of the task's stream; pass k is its data's length-grouped batches of epoch k."""
        out, passes = [], {}
        for position in range(start, start + count):
            k, index = divmod(position, self.passes[name])
            if k not in passes:
                passes[k] = length_grouped_batches(self.lengths[name], self.batch_size, self.seed, k)
            out.append(passes[k][index])
        return out

    def rows(self, item: tuple[str, list[int]]) -> list[dict]:
        name, indices = item
        return [self.features[name][i] for i in indices]

    def collate(self, rows: list[dict]) -> dict:
        return {**pad_batch(rows, self.pad_id), "task": rows[0]["task"]}
