"""Sequence packing for causal-LM training (`train --pack TOKENS`): several short examples share one row, and
attention stays inside each example.

Rows are packed once, best fit decreasing (longest example first, each into the row with the least room that
still holds it), so every epoch has the same rows and steps; each epoch shuffles them. Inside a row every example
keeps its own positions 0, 1, ...: given `position_ids` and no attention mask, transformers' decoders build a
block-diagonal causal mask from where the positions restart (checked on the model before training, see
`check_packed_attention`). An example's first token is a prompt token, never labelled, so no example is trained
to predict the next example's start.

    >>> pack_rows([5, 3, 4, 2], budget=8)
    [[0, 1], [2, 3]]
"""

import bisect
import math
import random

import torch

from slimtune.data.batching import pad_batch
from slimtune.errors import SlimtuneError
from slimtune.tasks.base import GENERATION
from slimtune.training.batch_source import BatchSource


def pack_rows(lengths: list[int], budget: int) -> list[list[int]]:
    """Example indices grouped into rows of at most `budget` tokens; an example longer than that gets a row alone."""
    rooms: list[tuple[int, int]] = []  # (room left, row), sorted
    rows: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        k = bisect.bisect_left(rooms, (lengths[i], -1))
        if k < len(rooms):
            room, row = rooms.pop(k)
            rows[row].append(i)
            bisect.insort(rooms, (room - lengths[i], row))
        else:
            rows.append([i])
            bisect.insort(rooms, (budget - lengths[i], len(rows) - 1))
    return rows


def packed_feature(features: list[dict]) -> dict:
    """One row of several examples: their tokens and labels end to end, positions restarting at each example."""
    return {"input_ids": [t for f in features for t in f["input_ids"]],
            "labels": [t for f in features for t in f["labels"]],
            "position_ids": [p for f in features for p in range(len(f["input_ids"]))],
            "examples": len(features)}


class PackedBatches(BatchSource):
    """Packed rows of `budget` tokens, `batch_size` rows a batch, reshuffled every epoch; an item is row indices."""

    def __init__(self, features: list[dict], budget: int, batch_size: int, seed: int, pad_id: int):
        groups = pack_rows([len(f["input_ids"]) for f in features], budget)
        self.packed = [packed_feature([features[i] for i in group]) for group in groups]
        self.batch_size, self.seed, self.pad_id = batch_size, seed, pad_id
        self.batches_per_epoch = math.ceil(len(self.packed) / batch_size)

    def epoch(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.packed)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def rows(self, item: list[int]) -> list[dict]:
        return [self.packed[i] for i in item]

    def collate(self, rows: list[dict]) -> dict:
        """Padded like any batch; the padding continues as one more "example" of its own (positions from 0),
        unlabelled, so no real token attends to it."""
        batch = pad_batch(rows, self.pad_id)
        width = batch["input_ids"].shape[1]
        batch["position_ids"] = torch.tensor([r["position_ids"] + list(range(width - len(r["position_ids"])))
                                              for r in rows])
        return batch


def check_packable(task, method) -> None:
    """Packing is for causal-LM training, with a method that adds no positions of its own to the rows."""
    if task.kind != GENERATION:
        raise SlimtuneError(f"--pack packs causal-lm examples; task {task.name} trains one example a row")
    if not method.keeps_packed_examples_apart:
        raise SlimtuneError(f"--pack: method {method.name} adds positions of its own to every row, which packed "
                            "examples would share; train without --pack")


def check_packed_attention(model, vocab_size: int) -> None:
    """Refuse packing for a model whose attention does not keep packed examples apart: two short random examples
    packed in one row must give the logits each gives alone. model: a CausalLM task model ([B, T] → [B, T, V])."""
    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randint(0, vocab_size, (1, n), generator=generator) for n in (5, 4))
    row = torch.cat([first, second], 1)
    positions = torch.cat([torch.arange(5), torch.arange(4)]).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(second, torch.ones_like(second))
            packed = model(row, None, position_ids=positions)
    finally:
        model.train(was_training)
    if not torch.allclose(packed[:, 5:], alone, atol=1e-4, rtol=1e-3):
        raise SlimtuneError("--pack: this model's attention does not keep packed examples apart (it ignores "
                            "restarting position ids); train without --pack")
