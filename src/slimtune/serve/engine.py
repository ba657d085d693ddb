"""Running one micro-batch: rows of many requests and adapters, through as few forward passes as possible.

Rows of adapters sharing the base go through one base pass per chunk of
`max_rows`, the chunk's rows ordered by adapter so that each adapter's rows are
one contiguous segment its updates apply to; then each adapter's head reads its
rows' token states. With `mixed=False` the same rows run one base
pass per adapter instead (the baseline the load test compares against). Rows
of adapters with their own model copy run one pass per adapter. (Causal-LM
adapters generate instead: serve/generator.py.)
"""

from collections import defaultdict
from dataclasses import dataclass

import torch

from slimtune.data.batching import pad_batch
from slimtune.serve.registry import SHARED, AdapterRegistry, ServedAdapter, UnknownAdapter
from slimtune.training.inference import unpad_rows


@dataclass
class Job:
    """One request's rows: its adapter and the task's features for its texts."""

    adapter: ServedAdapter
    features: list[dict]


class Engine:
    def __init__(self, registry: AdapterRegistry, max_rows: int, mixed: bool = True, on_pass=None):
        self.registry = registry  # its shared base may be loaded after the engine starts
        self.max_rows = max_rows
        self.mixed = mixed
        self.on_pass = on_pass  # called with (rows, adapters) after every forward pass, e.g. for metrics

    @torch.no_grad()
    def run(self, jobs: list[Job]) -> list[list[torch.Tensor] | Exception]:
        """Per job, its features' unpadded logits in order, or the exception that job alone gets."""
        results: list = [None] * len(jobs)
        rows = []  # (job index, feature index, adapter, feature)
        for j, job in enumerate(jobs):
            if job.adapter.removed:
                results[j] = UnknownAdapter(f"adapter {job.adapter.name!r} was unloaded before the request ran")
                continue
            results[j] = [None] * len(job.features)
            rows += [(j, i, job.adapter, feature) for i, feature in enumerate(job.features)]
        groups = defaultdict(list)  # rows run together: shared rows in one group when mixed, else one per adapter
        for row in rows:
            shared_pass = row[2].serving == SHARED
            groups["shared" if shared_pass and self.mixed else row[2]].append(row)
        for key, group in groups.items():
            group.sort(key=lambda row: -len(row[3]["input_ids"]))  # similar lengths pad less
            for start in range(0, len(group), self.max_rows):
                chunk = group[start : start + self.max_rows]
                outputs = self._shared_pass(chunk) if chunk[0][2].serving == SHARED else self._own_pass(chunk)
                for (j, i, _, _), output in zip(chunk, outputs):
                    results[j][i] = output
        return results

    def _shared_pass(self, chunk: list[tuple]) -> list[torch.Tensor]:
        order = sorted(range(len(chunk)), key=lambda i: chunk[i][2].slot)  # each adapter's rows one segment
        features = [chunk[i][3] for i in order]
        batch = pad_batch(features, chunk[0][2].tokenizer.pad_token_id)
        slots = [chunk[i][2].slot for i in order]
        hidden = self.registry.shared(batch, slots)  # [B, T, H]
        outputs: list = [None] * len(chunk)
        segments = defaultdict(list)  # adapter → its positions in the ordered batch (contiguous)
        for position, i in enumerate(order):
            segments[chunk[i][2]].append(position)
        for adapter, positions in segments.items():
            rows = slice(positions[0], positions[-1] + 1)
            logits = adapter.model.from_hidden(hidden[rows], batch["attention_mask"][rows])
            for position, output in zip(positions, unpad_rows(logits, features[rows])):
                outputs[order[position]] = output
        self._record(len(chunk), len(segments))
        return outputs

    def _own_pass(self, chunk: list[tuple]) -> list[torch.Tensor]:
        features = [row[3] for row in chunk]
        adapter = chunk[0][2]
        logits = adapter.model(**pad_batch(features, adapter.tokenizer.pad_token_id))
        self._record(len(chunk), 1)
        return unpad_rows(logits, features)

    def _record(self, rows: int, adapters: int) -> None:
        if self.on_pass is not None:
            self.on_pass(rows, adapters)
