"""Where the trainer's micro-batches come from: one task's features, or any other deterministic schedule.

An epoch's batches depend only on (seed, epoch), so a resumed run replays the
epoch it stopped in and skips the batches it had already consumed. Under
data-parallel training every rank builds the same epoch and collates its own
share of each batch's rows.
"""

import math

from slimtune.data.batching import length_grouped_batches, pad_batch


class BatchSource:
    """The trainer's view of training data: `batches_per_epoch` items per epoch, each naming one batch's rows."""

    batches_per_epoch: int

    def epoch(self, epoch: int) -> list:
        """The epoch's items in training order."""
        raise NotImplementedError

    def rows(self, item) -> list[dict]:
        """The features of an item's (global) batch."""
        raise NotImplementedError

    def collate(self, rows: list[dict]) -> dict:
        """The padded batch of some of one item's rows: model inputs and `labels` (plus what `batch_loss` reads)."""
        raise NotImplementedError


class FeatureBatches(BatchSource):
    """One task's features in length-grouped batches, reshuffled every epoch; an item is a list of row indices."""

    def __init__(self, features: list[dict], batch_size: int, seed: int, pad_id: int):
        self.features, self.batch_size, self.seed, self.pad_id = features, batch_size, seed, pad_id
        self.lengths = [len(f["input_ids"]) for f in features]
        self.batches_per_epoch = math.ceil(len(features) / batch_size)

    def epoch(self, epoch: int) -> list[list[int]]:
        return length_grouped_batches(self.lengths, self.batch_size, self.seed, epoch)

    def rows(self, item: list[int]) -> list[dict]:
        return [self.features[i] for i in item]

    def collate(self, rows: list[dict]) -> dict:
        return pad_batch(rows, self.pad_id)


def token_pieces(rows: list[dict], budget: int) -> list[list[dict]]:
    """`rows` cut in order into pieces of at most `budget` padded tokens (rows × the piece's longest row), at least
    one row each. Activations kept for backward grow with a forward pass's padded tokens (about 0.35 MB a token
    for MiniLM with LoRA on every linear layer): CoNLL's longest length-grouped batch, 32 × 164 tokens, took 1.9 GB
    at once. Pieces of 512 to 2048 tokens trained at the same speed on this CPU (docs/results.md)."""
    pieces, piece, longest = [], [], 0
    for row in rows:
        longest_with_row = max(longest, len(row["input_ids"]))
        if piece and (len(piece) + 1) * longest_with_row > budget:
            pieces.append(piece)
            piece, longest_with_row = [], len(row["input_ids"])
        piece.append(row)
        longest = longest_with_row
    return [*pieces, piece] if piece else pieces
