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


def example_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
                 ) -> list[bytes]:
    """One key per row of a padded batch, from its real tokens only, so the same text keys alike in any batch.

    The key holds the position of the first real token (left padding shifts positions), the real token ids and,
    when given, their token type ids. input_ids, attention_mask, token_type_ids: [B, T].
    """
    ids, mask = input_ids.cpu().numpy(), attention_mask.cpu().numpy().astype(bool)  # numpy: per-row indexing is cheap
    types = token_type_ids.cpu().numpy() if token_type_ids is not None else None
    keys = []
    for row in range(ids.shape[0]):
        real = mask[row]
        start = int(real.argmax())
        key = start.to_bytes(4, "little") + ids[row][real].tobytes()
        if types is not None:
            key += b"|" + types[row][real].tobytes()
        keys.append(key)
    return keys


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on `device`; other entries (a multi-task batch's task name) as they are."""
    return {name: value.to(device) if isinstance(value, torch.Tensor) else value for name, value in batch.items()}
