"""Batched forward passes without gradients, in length-grouped order, results in input order."""

import os
from collections.abc import Iterator

import torch
from torch import nn

from slimtune.data.batching import length_grouped_batches, pad_batch, to_device
from slimtune.progress import progress_bar

MIN_BATCHES_SHOWN = 20  # shorter passes finish before a progress line would help


def run_batches(
    model: nn.Module, features: list[dict], pad_id: int, batch_size: int
) -> Iterator[tuple[list[int], dict, torch.Tensor]]:
    """Yield (row indices, padded batch, model output) over `features`, grouped by length."""
    was_training = model.training
    model.eval()
    lengths = [len(f["input_ids"]) for f in features]
    device = next(model.parameters(), torch.empty(0)).device  # no weights (ONNX Runtime): the CPU
    order = length_grouped_batches(lengths, batch_size, seed=0, epoch=0, shuffle=False)
    quiet = len(order) < MIN_BATCHES_SHOWN or os.environ.get("RANK", "0") != "0"
    try:
        with torch.no_grad(), progress_bar(len(order), "inference", disable=quiet) as bar:
            for indices in order:
                batch = to_device(pad_batch([features[i] for i in indices], pad_id), device)
                yield indices, batch, model(**batch)
                bar.update(1)
    finally:
        model.train(was_training)


def predict_logits(model: nn.Module, features: list[dict], pad_id: int, batch_size: int) -> torch.Tensor:
    """[N, C] logits of a sequence classifier, row i for features[i]."""
    out = None
    for indices, _, logits in run_batches(model, features, pad_id, batch_size):
        if out is None:
            out = torch.empty(len(features), logits.shape[-1])
        out[indices] = logits.cpu()
    return out


def unpad_rows(logits: torch.Tensor, features: list[dict]) -> list[torch.Tensor]:
    """Per-row outputs without padding: [C] from sequence logits [B, C], [T_i, C] from token logits [B, T, C]."""
    if logits.dim() == 2:
        return list(logits)
    return [row[: len(feature["input_ids"])] for row, feature in zip(logits, features)]


def feature_outputs(model: nn.Module, features: list[dict], pad_id: int, batch_size: int) -> list[torch.Tensor]:
    """The model's output for each feature, in input order, padding removed (see `unpad_rows`), on the CPU."""
    out: list = [None] * len(features)
    for indices, _, logits in run_batches(model, features, pad_id, batch_size):
        for i, row in zip(indices, unpad_rows(logits, [features[i] for i in indices])):
            out[i] = row.cpu()
    return out
