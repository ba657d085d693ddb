"""Where the trainer's micro-batches come from: one task's features, or any other deterministic schedule.

An epoch's batches depend only on (seed, epoch), so a resumed run replays the
epoch it stopped in and skips the batches it had already consumed.
"""

import math

from slimtune.data.batching import length_grouped_batches, pad_batch


class BatchSource:
    """The trainer's view of training data: `batches_per_epoch` items per epoch, each collated to one batch."""

    batches_per_epoch: int

    def epoch(self, epoch: int) -> list:
        """The epoch's items in training order (an item names the rows of one batch)."""
        raise NotImplementedError

    def collate(self, item) -> dict:
        """The padded batch of an item: model inputs and `labels` (plus anything the task's `batch_loss` reads)."""
        raise NotImplementedError

    def count(self, item) -> int:
        """Examples in an item."""
        raise NotImplementedError


class FeatureBatches(BatchSource):
    """One task's features in length-grouped batches, reshuffled every epoch."""

    def __init__(self, features: list[dict], batch_size: int, seed: int, pad_id: int):
        self.features, self.batch_size, self.seed, self.pad_id = features, batch_size, seed, pad_id
        self.lengths = [len(f["input_ids"]) for f in features]
        self.batches_per_epoch = math.ceil(len(features) / batch_size)

    def epoch(self, epoch: int) -> list[list[int]]:
        return length_grouped_batches(self.lengths, self.batch_size, self.seed, epoch)

    def collate(self, item: list[int]) -> dict:
        return pad_batch([self.features[i] for i in item], self.pad_id)

    def count(self, item: list[int]) -> int:
        return len(item)
