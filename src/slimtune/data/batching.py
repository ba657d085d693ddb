"""Length-grouped batches with dynamic padding: each batch is padded only to its own longest row."""

import random

import torch

LABEL_PAD = -100  # ignored by cross-entropy


def length_grouped_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, shuffle: bool = True
) -> list[list[int]]:
    """Index batches of similar length; deterministic for (seed, epoch).

    Training shuffles, then sorts within windows of 50 batches so batches stay
    varied across the epoch; evaluation (shuffle=False) sorts globally.
    """
    order = list(range(len(lengths)))
    rng = random.Random(f"{seed}:{epoch}")
    if shuffle:
        rng.shuffle(order)
        window = batch_size * 50
    else:
        window = len(order) or 1
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def pad_batch(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack tokenised rows into tensors padded to the longest row.

    >>> pad_batch([{"input_ids": [5, 6, 7], "labels": 1}, {"input_ids": [5], "labels": 0}], 0)["input_ids"]
    tensor([[5, 6, 7],
            [5, 0, 0]])
    """
    width = max(len(f["input_ids"]) for f in features)
    batch = {
        "input_ids": torch.tensor([f["input_ids"] + [pad_id] * (width - len(f["input_ids"])) for f in features]),
        "attention_mask": torch.tensor(
            [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
        ),
    }
    if "token_type_ids" in features[0]:
        batch["token_type_ids"] = torch.tensor(
            [f["token_type_ids"] + [0] * (width - len(f["token_type_ids"])) for f in features]
        )
    if "labels" in features[0]:
        first = features[0]["labels"]
        if isinstance(first, list):
            batch["labels"] = torch.tensor(
                [f["labels"] + [LABEL_PAD] * (width - len(f["labels"])) for f in features]
            )
        else:
            batch["labels"] = torch.tensor([f["labels"] for f in features])
    return batch


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device) for name, tensor in batch.items()}
