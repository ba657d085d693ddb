"""Batched forward passes without gradients, in length-grouped order, results in input order."""

from collections.abc import Iterator

import torch
from torch import nn

from slimtune.data.batching import length_grouped_batches, pad_batch, to_device


def run_batches(
    model: nn.Module, features: list[dict], pad_id: int, batch_size: int
) -> Iterator[tuple[list[int], dict, torch.Tensor]]:
    """Yield (row indices, padded batch, model output) over `features`, grouped by length."""
    was_training = model.training
    model.eval()
    lengths = [len(f["input_ids"]) for f in features]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for indices in length_grouped_batches(lengths, batch_size, seed=0, epoch=0, shuffle=False):
                batch = to_device(pad_batch([features[i] for i in indices], pad_id), device)
                yield indices, batch, model(**batch)
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
