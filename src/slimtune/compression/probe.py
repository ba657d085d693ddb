"""Quality of a bare encoder: a linear probe (the task head alone, encoder frozen) fitted and scored on task data.

A pruned encoder has no task head, so "quality before and after" is the probe's
score: the same head recipe fitted on one half of the sampled rows and scored on
the other half, for the original and for the pruned encoder. It ranks encoders;
the quality that matters is measured after adapting the pruned model (docs/results.md).
"""

import random
from dataclasses import dataclass

import torch

from slimtune.data.batching import length_grouped_batches, pad_batch
from slimtune.errors import SlimtuneError
from slimtune.methods.adaptation import attach
from slimtune.methods.registry import create_method
from slimtune.progress import progress_bar

PROBE_EPOCHS = 4
PROBE_LR = 1e-2  # the head method's default learning rate


@dataclass
class ProbeData:
    fit: list[dict]  # features that fit the head and measure importance
    score: list[dict]  # held-out features that score it
    labels: list[str]
    rows: int  # sampled rows; a task may cut one row into several features


def probe_data(task, path: str, read_options: dict, backbone, examples: int, seed: int = 0) -> ProbeData:
    """A seeded sample of `examples` rows of `path`, split in half."""
    rows = task.read(path, **read_options)
    rows = random.Random(seed).sample(rows, min(examples, len(rows)))
    if len(rows) < 4:
        raise SlimtuneError(f"{path}: need at least 4 rows to fit and score a probe, got {len(rows)}")
    labels = task.label_names(rows)
    half = len(rows) // 2  # split rows, not features, so no row is cut across the halves
    fit, score = (task.encode(part, backbone.tokenizer, labels, backbone.max_length)
                  for part in (rows[:half], rows[half:]))
    return ProbeData(fit, score, labels, len(rows))


def batches(features: list[dict], pad_id: int, batch_size: int, epoch: int = 0) -> list[dict]:
    order = length_grouped_batches([len(f["input_ids"]) for f in features], batch_size, seed=0, epoch=epoch)
    return [pad_batch([features[i] for i in indices], pad_id) for indices in order]


def fit_probe(backbone, task, data: ProbeData, batch_size: int) -> torch.nn.Module:
    """The task model over `backbone` with only its head trained, encoder frozen (dropout off)."""
    torch.manual_seed(0)
    model = task.build_model(backbone, data.labels)
    params = attach(model, create_method("head", {}))
    optimizer = torch.optim.AdamW(params, lr=PROBE_LR)
    model.eval()
    pad_id = backbone.tokenizer.pad_token_id
    epochs = [batches(data.fit, pad_id, batch_size, epoch) for epoch in range(PROBE_EPOCHS)]
    with progress_bar(sum(map(len, epochs)), "probe") as bar:
        for epoch_batches in epochs:
            for batch in epoch_batches:
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                loss = task.loss(model(**inputs), batch["labels"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.update(1)
    return model


def probe_score(model: torch.nn.Module, backbone, task, data: ProbeData, batch_size: int) -> float:
    metrics = task.evaluate(model, data.score, backbone.tokenizer.pad_token_id, batch_size, data.labels)
    return metrics[task.primary_metric]
