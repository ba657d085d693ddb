"""Training batches whose texts are augmented afresh every epoch (`--augment eda`).

Only the training rows pass through here; dev and test rows are encoded as they are. Each row's variant in
an epoch depends only on (seed, epoch, row), so a resumed run sees the same texts as an uninterrupted one.
"""

import random
from collections.abc import Callable
from dataclasses import replace

from slimtune.data.batching import length_grouped_batches
from slimtune.data.eda import eda
from slimtune.training.batch_source import FeatureBatches


class AugmentedBatches(FeatureBatches):
    """`FeatureBatches` over rows re-augmented and re-encoded at the start of each epoch."""

    def __init__(self, rows: list, encode: Callable[[list], list[dict]], synonyms, rate: float, batch_size: int,
                 seed: int, pad_id: int):
        super().__init__(encode(rows), batch_size, seed, pad_id)
        self.source_rows, self.encode, self.synonyms, self.rate = rows, encode, synonyms, rate
        self.current_epoch = None

    def augmented_rows(self, epoch: int) -> list:
        """The epoch's variants of the training rows (rows with a `text`), in row order."""
        return [replace(row, text=eda(row.text, self.rate, random.Random(f"{self.seed}:{epoch}:{i}"), self.synonyms))
                for i, row in enumerate(self.source_rows)]

    def epoch(self, epoch: int) -> list[list[int]]:
        if epoch != self.current_epoch:
            self.features = self.encode(self.augmented_rows(epoch))
            self.lengths = [len(f["input_ids"]) for f in self.features]
            self.current_epoch = epoch
        return length_grouped_batches(self.lengths, self.batch_size, self.seed, epoch)
