"""The continuous batcher's scheduling and a row's token choice, without a model."""

import asyncio

import torch

from slimtune.serve.decoding import ContinuousBatcher, Sampling, Sequence, pick


class EndsAtOnce:
    """A lane whose sequences end as soon as they are admitted."""

    rows: list = []

    def admit(self, seq: Sequence) -> None:
        seq.emit(("end", "stop"))


def sequence(events: list) -> Sequence:
    return Sequence([1, 2], 0, Sampling(max_new_tokens=4), frozenset({0}), events.append)


def test_a_sequence_submitted_while_the_runner_stops_still_runs():
    """The runner's last tick finds nothing to do; a sequence submitted before the runner has seen that answer
    must not be left waiting (it once hung its request forever)."""

    async def scenario():
        first, second = [], []
        lane = EndsAtOnce()
        calls = 0

        async def exclusive(fn):
            nonlocal calls
            calls += 1
            result = fn()
            if calls == 1:
                batcher.submit(lane, sequence(second))  # arrives after the tick, before the runner reads it
            await asyncio.sleep(0)
            return result

        batcher = ContinuousBatcher(exclusive, max_rows=4)
        batcher.submit(lane, sequence(first))
        for _ in range(100):
            await asyncio.sleep(0)
            if second and batcher._runner is None:
                break
        return first, second, batcher._runner

    first, second, runner = asyncio.run(scenario())
    assert first == [("end", "stop")] and second == [("end", "stop")] and runner is None


def test_pick_greedy_top_k_and_seeded_sampling():
    logits = torch.tensor([0.1, 2.0, 1.9, -1.0])
    greedy = sequence([])
    assert pick(logits, greedy) == 1
    top1 = Sequence([1], 0, Sampling(4, temperature=1.5, top_k=1, seed=0), frozenset(), print)
    assert {pick(logits, top1) for _ in range(20)} == {1}
    nucleus = Sequence([1], 0, Sampling(4, temperature=1.0, top_p=0.6, seed=0), frozenset(), print)
    assert {pick(logits, nucleus) for _ in range(50)} <= {1, 2}
    seeded = [Sequence([1], 0, Sampling(4, temperature=2.0, seed=seed), frozenset(), print) for seed in (7, 7, 8)]
    draws = [[pick(logits, seq) for _ in range(30)] for seq in seeded]
    assert draws[0] == draws[1] != draws[2] and len(set(draws[0])) > 1
