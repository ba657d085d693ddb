"""The micro-batching queue on its own, with a stand-in for the model."""

import asyncio
import threading

from slimtune.serve.batcher import MicroBatcher


class Recorder:
    """A batch runner that records each batch and its thread, and fails the whole batch on a job named 'bad'."""

    def __init__(self):
        self.batches, self.threads = [], set()

    def __call__(self, jobs):
        self.batches.append(list(jobs))
        self.threads.add(threading.get_ident())
        if "bad" in jobs:
            raise RuntimeError("boom")
        return [f"done {job}" for job in jobs]


async def with_batcher(run, max_rows, max_wait_s, body):
    batcher = MicroBatcher(run, max_rows, max_wait_s)
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.stop()


def test_concurrent_requests_share_a_batch_up_to_max_rows():
    run = Recorder()

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(f"job{i}", rows=2) for i in range(5)))

    results = asyncio.run(with_batcher(run, max_rows=4, max_wait_s=0.2, body=body))
    assert results == [f"done job{i}" for i in range(5)]
    assert [len(batch) for batch in run.batches] == [2, 2, 1]  # 4 rows at most; the rest carried over


def test_a_lone_request_waits_no_longer_than_max_wait():
    async def body(batcher):
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit("one", rows=1)
        return loop.time() - started

    assert asyncio.run(with_batcher(Recorder(), max_rows=8, max_wait_s=0.05, body=body)) < 1.0


def test_a_failing_job_fails_alone_and_the_worker_lives_on():
    run = Recorder()

    async def body(batcher):
        first = await asyncio.gather(batcher.submit("good", 1), batcher.submit("bad", 1), return_exceptions=True)
        later = await batcher.submit("after", 1)
        changed = await batcher.exclusive(lambda: threading.get_ident())
        return first, later, changed

    (good, bad), later, model_thread = asyncio.run(with_batcher(run, max_rows=8, max_wait_s=0.1, body=body))
    assert good == "done good" and isinstance(bad, RuntimeError) and later == "done after"
    assert run.batches == [["good", "bad"], ["good"], ["bad"], ["after"]]  # retried one by one
    assert run.threads == {model_thread}  # batches and model changes share the one model thread


def test_results_the_runner_returns_as_exceptions_go_to_their_job_only():
    def run(jobs):
        return [ValueError(job) if job == "refused" else job for job in jobs]

    async def body(batcher):
        return await asyncio.gather(batcher.submit("ok", 1), batcher.submit("refused", 1), return_exceptions=True)

    ok, refused = asyncio.run(with_batcher(run, max_rows=8, max_wait_s=0.1, body=body))
    assert ok == "ok" and isinstance(refused, ValueError) and str(refused) == "refused"
