"""Running one micro-batch: rows of many requests and adapters, through as few forward passes as possible.

Rows are sorted by length and cut into passes of at most `max_rows` rows whose
longest row is at most `spread` times their shortest, so padding stays small
(one pass over a micro-batch of mixed lengths did three times the real work).
Rows of adapters sharing the base run together in those passes whatever their
adapter, ordered by adapter inside a pass so that each adapter's rows are one
contiguous segment its updates apply to; then each adapter's head reads its
rows' token states. With `mixed=False` the rows of each adapter run in passes
of their own instead (the baseline the load test compares against). Rows of
adapters with their own model copy run one pass per adapter. (Causal-LM
adapters generate instead: serve/decoding.py.)
"""

from collections import defaultdict
from dataclasses import dataclass

import torch

from slimtune.data.batching import pad_batch
from slimtune.models.inference import unpad_rows
from slimtune.serve.registry import AdapterRegistry
from slimtune.serve.served import SHARED, ServedAdapter, UnknownAdapter


@dataclass
class Job:
    """One request's rows: its adapter and the task's features for its texts. `pooled`: the mean-pooled sentence
    vector [H] of each row (embeddings) instead of the task head's output."""

    adapter: ServedAdapter
    features: list[dict]
    pooled: bool = False


class Engine:
    def __init__(self, registry: AdapterRegistry, max_rows: int, mixed: bool = True, on_pass=None,
                 spread: float = 1.5):
        self.registry = registry  # its shared base may be loaded after the engine starts
        self.max_rows = max_rows
        self.mixed = mixed
        self.spread = spread  # longest / shortest row of one pass, at most
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
            rows += [(j, i, job.adapter, feature, job.pooled) for i, feature in enumerate(job.features)]
        groups = defaultdict(list)  # rows run together: shared rows in one group when mixed, else one per adapter
        for row in rows:
            shared_pass = row[2].serving == SHARED
            groups["shared" if shared_pass and self.mixed else row[2]].append(row)
        for key, group in groups.items():
            for chunk in self._passes(group):
                outputs = self._shared_pass(chunk) if chunk[0][2].serving == SHARED else self._own_pass(chunk)
                for (j, i, *_), output in zip(chunk, outputs):
                    results[j][i] = output
        return results

    def _passes(self, group: list[tuple]) -> list[list[tuple]]:
        """The group's rows, longest first, cut into passes of at most `max_rows` rows whose longest row is at most
        `spread` times as long as their shortest: padding costs at most that much (it tripled the work of
        one-pass micro-batches of mixed lengths)."""
        group = sorted(group, key=lambda row: -len(row[3]["input_ids"]))
        passes: list[list[tuple]] = []
        for row in group:
            if (not passes or len(passes[-1]) == self.max_rows
                    or len(row[3]["input_ids"]) * self.spread < len(passes[-1][0][3]["input_ids"])):
                passes.append([])
            passes[-1].append(row)
        return passes

    def _shared_pass(self, chunk: list[tuple]) -> list[torch.Tensor]:
        order = sorted(range(len(chunk)), key=lambda i: (chunk[i][2].slot, chunk[i][4]))  # segments
        features = [chunk[i][3] for i in order]
        batch = pad_batch(features, chunk[0][2].tokenizer.pad_token_id)
        slots = [chunk[i][2].slot for i in order]
        hidden = self.registry.shared(batch, slots)  # [B, T, H]
        outputs: list = [None] * len(chunk)
        segments = defaultdict(list)  # (adapter, pooled) → its positions in the ordered batch
        for position, i in enumerate(order):
            segments[chunk[i][2], chunk[i][4]].append(position)
        for (adapter, pooled), positions in segments.items():
            rows = torch.tensor(positions)
            hidden_rows, mask = hidden.index_select(0, rows), batch["attention_mask"].index_select(0, rows)
            if pooled:
                outputs_here = list(mean_pool(hidden_rows, mask))
            else:
                logits = adapter.model.from_hidden(hidden_rows, mask)
                outputs_here = unpad_rows(logits, [features[p] for p in positions])
            for position, output in zip(positions, outputs_here):
                outputs[order[position]] = output
        self._record(len(chunk), len({adapter for adapter, _ in segments}))
        return outputs

    def _own_pass(self, chunk: list[tuple]) -> list[torch.Tensor]:
        features = [row[3] for row in chunk]
        adapter = chunk[0][2]
        batch = pad_batch(features, adapter.tokenizer.pad_token_id)
        outputs: list = [None] * len(chunk)
        pooled = [i for i, row in enumerate(chunk) if row[4]]
        if pooled:
            index = torch.tensor(pooled)
            inputs = {k: v.index_select(0, index) for k, v in batch.items()
                      if k in ("input_ids", "attention_mask", "token_type_ids")}
            hidden = adapter.model.backbone(**inputs).last_hidden_state
            for i, vector in zip(pooled, mean_pool(hidden, inputs["attention_mask"])):
                outputs[i] = vector
        headed = [i for i, row in enumerate(chunk) if not row[4]]
        if headed:
            index = torch.tensor(headed)
            logits = adapter.model(**{k: v.index_select(0, index) for k, v in batch.items()})
            for i, output in zip(headed, unpad_rows(logits, [features[i] for i in headed])):
                outputs[i] = output
        self._record(len(chunk), 1)
        return outputs

    def _record(self, rows: int, adapters: int) -> None:
        if self.on_pass is not None:
            self.on_pass(rows, adapters)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence vectors [B, H]: the mean of each row's token states [B, T, H] over its real tokens (mask [B, T])."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
