"""Dynamic micro-batching: requests that arrive close together run as one batch.

Requests wait in a queue; one worker takes the first, then keeps taking more
until the batch holds `max_rows` rows or `max_wait_s` has passed since the
first, and runs the batch in the one model thread (torch stays off the event
loop). Model changes (loading or unloading adapters) run in that same thread,
so they never overlap a batch. The worker outlives every failure: when a batch
raises, each of its jobs is retried alone, so one bad request fails alone.
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger("slimtune.serve")


@dataclass
class _Waiting:
    job: object
    rows: int
    future: asyncio.Future


class MicroBatcher:
    def __init__(self, run_batch, max_rows: int, max_wait_s: float):
        """`run_batch(jobs)` returns, per job, its result or the exception to raise for it."""
        self.run_batch = run_batch
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slimtune-model")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="slimtune-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def submit(self, job, rows: int):
        """Queue a job of `rows` rows and wait for its result."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Waiting(job, rows, future))
        return await future

    async def exclusive(self, fn, *args):
        """Run `fn(*args)` in the model thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _work(self) -> None:
        carried = None
        while True:
            batch = [carried or await self.queue.get()]
            carried = await self._fill(batch)
            try:
                await self._run(batch)
            except Exception:  # never lose the worker; _run has already failed what it could not finish
                log.exception("micro-batch failed")

    async def _fill(self, batch: list[_Waiting]) -> _Waiting | None:
        """Add waiting jobs up to `max_rows` rows or until the wait is over; returns a job that did not fit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        rows = batch[0].rows
        while rows < self.max_rows:
            try:
                waiting = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):
                        waiting = await self.queue.get()
                except TimeoutError:
                    return None
            if rows + waiting.rows > self.max_rows:
                return waiting
            batch.append(waiting)
            rows += waiting.rows
        return None

    async def _run(self, batch: list[_Waiting]) -> None:
        live = [w for w in batch if not w.future.done()]  # a client that went away cancelled its future
        if not live:
            return
        try:
            results = await self.exclusive(self.run_batch, [w.job for w in live])
        except Exception:
            log.exception("batch of %d jobs failed; running them one by one", len(live))
            results = []
            for waiting in live:
                try:
                    results += await self.exclusive(self.run_batch, [waiting.job])
                except Exception as e:
                    results.append(e)
        for waiting, result in zip(live, results):
            if waiting.future.done():
                continue
            if isinstance(result, BaseException):
                waiting.future.set_exception(result)
            else:
                waiting.future.set_result(result)
