"""Answering prompts as streams of text: what the generation endpoints (/v1/generate, /v1/completions,
/v1/chat/completions) share.

A prompt for a shared causal LM (an adapter whose rows share its base, or the
bare base) joins that base's continuous batch (`decoding.py`). A prompt for an
adapter with its own model copy (methods without row updates, int8 runs) runs
whole in the model thread through transformers' `generate`, its tokens streamed
as they come. Either way an `Answer` turns the token events into text pieces:
decoded incrementally, holding back an incomplete UTF-8 character and any tail
that may be the start of a stop string, and ending at the first stop string.
"""

import asyncio
from dataclasses import dataclass, field

from slimtune.serve.bases import LMBase
from slimtune.serve.decoding import ContinuousBatcher, Sampling, Sequence
from slimtune.serve.multi_adapter import BASE_SLOT
from slimtune.serve.served import ServedAdapter, UnknownAdapter
from slimtune.tasks.generation import GenerationOptions, generate_ids


@dataclass(eq=False)
class Answer:
    """The answer to one prompt, read with `async for piece in answer.pieces()`; afterwards `finish_reason`
    ("stop" or "length") and `completion_tokens` say how it ended."""

    seq: Sequence
    tokenizer: object
    stops: list[str]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    finish_reason: str | None = None
    text: str = ""

    @property
    def prompt_tokens(self) -> int:
        return len(self.seq.prompt)

    @property
    def completion_tokens(self) -> int:
        return len(self.seq.generated)

    async def pieces(self):
        sent = 0
        try:
            while True:
                kind, value = await self.queue.get()
                if kind == "error":
                    raise value
                if kind == "end":
                    self.finish_reason = value
                    if len(self.text) > sent:
                        yield self.text[sent:]
                    return
                self.text = self.tokenizer.decode(self.seq.generated, skip_special_tokens=True)
                cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
                if cut >= 0:
                    self.text, self.finish_reason = self.text[:cut], "stop"
                    if cut > sent:
                        yield self.text[sent:]
                    return
                safe = len(self.text) - self._held_back()
                if safe > sent:
                    yield self.text[sent:safe]
                    sent = safe
        finally:
            self.seq.cancelled = True  # ended, or the client went away: the row leaves the batch

    def _held_back(self) -> int:
        """Characters at the end of the text not to send yet: an undecodable tail, or a stop string's start."""
        if self.text.endswith("\ufffd"):
            return 1
        return max((n for s in self.stops for n in range(min(len(s) - 1, len(self.text)), 0, -1)
                    if self.text.endswith(s[:n])), default=0)

    async def whole(self) -> str:
        async for _ in self.pieces():
            pass
        return self.text


class Answering:
    """Starts answers: on a shared base's continuous batch, or in the model thread on an adapter's own copy."""

    def __init__(self, decoder: ContinuousBatcher, exclusive):
        self.decoder = decoder
        self.exclusive = exclusive
        self._running: set[asyncio.Task] = set()  # own-copy answers in flight (the loop keeps only weak references)

    def start(self, target: ServedAdapter | LMBase, prompt: list[int], sampling: Sampling,
              stops: list[str] = ()) -> Answer:
        tokenizer = target.tokenizer
        loop = asyncio.get_running_loop()
        answer = None

        def emit(event):
            loop.call_soon_threadsafe(answer.queue.put_nowait, event)

        lm = target.lm if isinstance(target, LMBase) else (target.lm_base or target.model).lm
        seq = Sequence(prompt, BASE_SLOT, sampling, frozenset(stop_token_ids(lm, tokenizer)), emit)
        answer = Answer(seq, tokenizer, [s for s in stops if s])
        if isinstance(target, LMBase):
            self.decoder.submit(self.decoder.lane(target.lm, target.shared), seq)
        elif target.lm_base is not None:
            seq.slot = target.slot
            self.decoder.submit(self.decoder.lane(target.lm_base.lm, target.lm_base.shared), seq)
        else:
            task = asyncio.ensure_future(self._own_copy(target, seq))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return answer

    async def _own_copy(self, adapter: ServedAdapter, seq: Sequence) -> None:
        try:
            await self.exclusive(self._generate_alone, adapter, seq)
        except Exception as e:
            seq.emit(("error", e))

    def _generate_alone(self, adapter: ServedAdapter, seq: Sequence) -> None:
        """transformers' generate on the adapter's own model (model thread), each new token sent as it comes."""
        if adapter.removed:
            raise UnknownAdapter(f"adapter {adapter.name!r} was unloaded before the request ran")
        if seq.cancelled:
            return
        sampling = seq.sampling
        options = GenerationOptions(max_new_tokens=sampling.max_new_tokens, sample=sampling.temperature > 0,
                                    temperature=sampling.temperature or 1.0, top_p=sampling.top_p,
                                    top_k=sampling.top_k, seed=sampling.seed)
        (ids,) = generate_ids(adapter.model, [seq.prompt], options, streamer=_TokenStreamer(seq))
        seq.emit(("end", "length" if len(ids) >= sampling.max_new_tokens else "stop"))


class _TokenStreamer:
    """A transformers streamer passing each new token (not the prompt, not end-of-turn) to a sequence."""

    def __init__(self, seq: Sequence):
        self.seq = seq
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            if token in self.seq.stop_ids or self.seq.cancelled:
                self.seq.cancelled = True  # generate may go on a little (padding); nothing more is sent
                continue
            self.seq.generated.append(token)
            self.seq.emit(("token", token))

    def end(self) -> None:
        pass


def stop_token_ids(lm, tokenizer) -> list[int]:
    """The ids that end an answer: the model's end-of-sequence token(s), else the tokenizer's."""
    eos = lm.generation_config.eos_token_id
    eos = eos if eos is not None else tokenizer.eos_token_id
    return list(eos) if isinstance(eos, list | tuple) else [eos]
