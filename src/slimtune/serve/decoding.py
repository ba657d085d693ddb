"""Continuous batching of text generation across requests (in the spirit of Orca and vLLM, without paging).

Every causal LM the server shares (a base with the row updates of its adapters,
see `SharedBase`) has one `Lane`: the rows being answered now, their key/value
cache [B, heads, T, dim] per layer, left-padded, and the padding mask [B, T]. A
new prompt is prefilled alone, then joins the lane's batch at the next step (its
cache padded on the left to the batch's length, or the batch's to its own); each
step feeds every row its last token, with its own position and its own adapter's
updates (rows grouped by adapter slot), and picks each row's next token by its
own options (greedy, or sampled with its own seeded generator). A row that ends
(end of turn, its token budget, or its client gone) leaves at once, and padding
columns no row needs any more are cut. Greedy answers thus equal the prompt run
alone, up to float rounding in the padded matmuls.

Steps run in the one model thread (`MicroBatcher.exclusive`), one tick at a
time, so prediction micro-batches interleave with generation steps.
"""

import asyncio
import inspect
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.serve.multi_adapter import SharedBase


@dataclass
class Sampling:
    """How one row picks its tokens. temperature 0: greedy."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None


@dataclass(eq=False)
class Sequence:
    """One prompt being answered. Events go to `emit` (called in the model thread): ("token", id), then
    ("end", "stop" | "length") or ("error", exception)."""

    prompt: list[int]
    slot: int
    sampling: Sampling
    stop_ids: frozenset[int]
    emit: object
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False  # set by the consumer (client gone, stop string met): leaves at the next step
    generator: torch.Generator | None = None

    def __post_init__(self):
        if self.sampling.temperature > 0:
            self.generator = torch.Generator()
            self.generator.manual_seed(self.sampling.seed if self.sampling.seed is not None
                                       else int(torch.randint(0, 2**62, ()).item()))


class Lane:
    """The running batch over one causal LM."""

    def __init__(self, lm: nn.Module, shared: SharedBase | None):
        self.lm = lm
        self.shared = shared
        self.rows: list[Sequence] = []
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: keys, values [B, heads, T, dim]
        self.mask = torch.zeros(0, 0, dtype=torch.long)  # [B, T], 1 where a real token is cached

    def admit(self, seq: Sequence) -> None:
        """Prefill `seq` alone, pick its first token, and add it to the batch."""
        ids = torch.tensor([seq.prompt])
        mask = torch.ones_like(ids)
        logits, cache = self._forward(ids, mask, torch.arange(ids.shape[1]).unsqueeze(0), [], [seq.slot])
        if not self._take(seq, logits[0]):
            return
        if not self.rows:
            self.rows, self.cache, self.mask = [seq], cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        self.cache = [(torch.cat([_left_pad(k, width), _left_pad(nk, width)]),
                       torch.cat([_left_pad(v, width), _left_pad(nv, width)]))
                      for (k, v), (nk, nv) in zip(self.cache, cache)]
        self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(mask, width)])
        self.rows.append(seq)

    def step(self) -> None:
        """One decoding step for every row; rows that end leave."""
        self._drop([i for i, seq in enumerate(self.rows) if seq.cancelled])
        if not self.rows:
            return
        ids = torch.tensor([[seq.generated[-1]] for seq in self.rows])
        positions = self.mask.sum(1, keepdim=True)  # each row's own next position
        self.mask = torch.cat([self.mask, torch.ones_like(ids)], dim=1)
        logits, self.cache = self._forward(ids, self.mask, positions, self.cache, [s.slot for s in self.rows])
        done = [i for i, seq in enumerate(self.rows) if not self._take(seq, logits[i])]
        self._drop(done)

    def _take(self, seq: Sequence, logits: torch.Tensor) -> bool:
        """Pick and emit `seq`'s next token; False when the sequence has ended."""
        token = pick(logits, seq)
        if token in seq.stop_ids:
            seq.emit(("end", "stop"))
            return False
        seq.generated.append(token)
        seq.emit(("token", token))
        if len(seq.generated) >= seq.sampling.max_new_tokens:
            seq.emit(("end", "length"))
            return False
        return True

    def _drop(self, indices: list[int]) -> None:
        if not indices:
            return
        keep = [i for i in range(len(self.rows)) if i not in set(indices)]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.mask = [], torch.zeros(0, 0, dtype=torch.long)
            return
        index = torch.tensor(keep)
        mask = self.mask.index_select(0, index)
        first = int(mask.any(0).long().argmax())  # columns before it are padding in every remaining row
        self.mask = mask[:, first:]
        self.cache = [(k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:])
                      for k, v in self.cache]

    @torch.no_grad()
    def _forward(self, ids, mask, positions, cache, slots):
        """Last-position logits [B, V] and the grown cache."""
        from transformers import DynamicCache

        past = DynamicCache(ddp_cache_data=cache) if cache else DynamicCache()
        grouped = self.shared.rows_of(slots) if self.shared is not None else nullcontext()
        with grouped:
            out = self.lm(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          logits_to_keep=1, **{self._cache_argument: past})
        grown = out["cache"] if "cache" in out else out["past_key_values"]
        return out.logits[:, -1].float(), [(layer.keys, layer.values) for layer in grown.layers]

    @property
    def _cache_argument(self) -> str:
        """transformers 5.x renamed `past_key_values` to `cache` (the old name goes in 5.40)."""
        return "cache" if "cache" in inspect.signature(self.lm.forward).parameters else "past_key_values"


def pick(logits: torch.Tensor, seq: Sequence) -> int:
    """The next token from one row's logits [V]: greedy, or sampled with top-k / top-p at the row's temperature."""
    sampling = seq.sampling
    if sampling.temperature <= 0:
        return int(logits.argmax())
    logits = logits / sampling.temperature
    if sampling.top_k and sampling.top_k < logits.shape[0]:
        cutoff = torch.topk(logits, sampling.top_k).values[-1]
        logits = logits.masked_fill(logits < cutoff, float("-inf"))
    if sampling.top_p < 1:
        ordered, order = torch.sort(logits, descending=True)
        mass = F.softmax(ordered, dim=-1).cumsum(-1)
        drop = mass - F.softmax(ordered, dim=-1) >= sampling.top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=seq.generator))


def _left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad a mask [B, T] or cache tensor [B, heads, T, dim] on the left of its T axis to `width`."""
    axis = 1 if t.dim() == 2 else 2
    missing = width - t.shape[axis]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[axis] = missing
    return torch.cat([t.new_zeros(shape), t], dim=axis)


class ContinuousBatcher:
    """Admits new sequences into their lanes and steps every lane, one tick at a time in the model thread, while
    any sequence runs. `max_rows` bounds each lane's batch; later sequences wait for a row to free."""

    def __init__(self, exclusive, max_rows: int, on_step=None):
        self.exclusive = exclusive  # runs a function in the model thread (MicroBatcher.exclusive)
        self.max_rows = max_rows
        self.on_step = on_step  # called with (rows, adapters) after each decoding step, e.g. for metrics
        self.lanes: dict[int, Lane] = {}  # by id of the lane's model
        self._waiting: list[tuple[Lane, Sequence]] = []
        self._lock = threading.Lock()  # the event loop adds to _waiting, the model thread takes from it
        self._runner: asyncio.Task | None = None

    def lane(self, lm: nn.Module, shared: SharedBase | None) -> Lane:
        return self.lanes.setdefault(id(lm), Lane(lm, shared))

    def forget(self, lm: nn.Module) -> None:
        """Drop the lane of a model no longer served (its rows have all ended)."""
        lane = self.lanes.get(id(lm))
        if lane is not None and not lane.rows:
            del self.lanes[id(lm)]

    def submit(self, lane: Lane, seq: Sequence) -> None:
        """Queue `seq` (event loop); it joins its lane at the next tick."""
        with self._lock:
            self._waiting.append((lane, seq))
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="slimtune-decoding")

    async def _run(self) -> None:
        """Tick while there is work. Only the event loop submits and only here does the runner stop, with no await
        between the last look at the queue and `_runner = None`: a sequence submitted meanwhile is never lost."""
        try:
            while True:
                if not await self.exclusive(self._tick):
                    with self._lock:
                        if not self._waiting:
                            return
                await asyncio.sleep(0)  # let requests arrive and predictions run between steps
        finally:
            self._runner = None

    def _tick(self) -> bool:
        """Admit what fits, step every lane; True while any sequence runs or waits."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        later = []
        for lane, seq in waiting:
            if seq.cancelled:
                continue
            if len(lane.rows) >= self.max_rows:
                later.append((lane, seq))
                continue
            self._guarded(lane, [seq], lambda: lane.admit(seq))
        for lane in list(self.lanes.values()):
            if lane.rows:
                rows, adapters = len(lane.rows), len({seq.slot for seq in lane.rows})
                self._guarded(lane, list(lane.rows), lane.step)
                if self.on_step is not None:
                    self.on_step(rows, adapters)
        with self._lock:
            self._waiting = later + self._waiting
            return bool(self._waiting) or any(lane.rows for lane in self.lanes.values())

    def _guarded(self, lane: Lane, seqs: list[Sequence], work) -> None:
        """Run `work`; if it fails, the sequences it concerned end with the error and leave the lane."""
        try:
            work()
        except Exception as e:  # a broken row must not stop the others' answers
            for seq in seqs:
                seq.emit(("error", e))
            concerned = {id(s) for s in seqs}
            lane._drop([i for i, s in enumerate(lane.rows) if id(s) in concerned])
