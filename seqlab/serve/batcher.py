"""Dynamic batching: concurrent requests gathered into batches for one model thread.

Handlers ``submit`` jobs and await them. A worker thread takes the first waiting job,
waits up to ``max_wait_s`` for more that can share its batch (same ``key``: the same
kind of work with the same settings), up to ``max_batch``, runs them together and hands
each job its own result. The queue of waiting jobs is bounded: a job that finds it full
is refused at once (the server answers 503 with Retry-After) instead of queueing work
that would time out anyway.

The model runs in one thread, so requests never race on it; the event loop stays free
to accept, stream and refuse while a batch runs.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

logger = logging.getLogger("seqlab")


class QueueFull(Exception):
    """The batcher's queue of waiting jobs is full."""


@dataclass
class Job:
    """One request's work. ``key``: jobs with equal keys may share a batch. ``payload``:
    what the runner needs. ``on_event``: called from the model thread (thread-safely
    forwarded to the event loop) with streamed pieces of the result."""

    key: Hashable
    payload: Any
    on_event: Callable[[Any], None] | None = None
    future: asyncio.Future | None = field(default=None, repr=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def emit(self, event: Any) -> None:
        if self.on_event is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.on_event, event)


class Batcher:
    """Runs ``runner(jobs) -> results`` (one result per job, in order) on batches of
    compatible jobs in a thread of its own.

    Args:
        runner: does the work of one batch; an exception fails every job of the batch.
        max_batch: most jobs per batch (1 turns batching off).
        max_wait_s: how long the first job of a batch waits for companions.
        queue_size: most jobs waiting; more are refused with QueueFull.
    """

    def __init__(self, runner: Callable[[list[Job]], list[Any]], *, max_batch: int = 8,
                 max_wait_s: float = 0.005, queue_size: int = 64):
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch and queue_size must be positive, max_wait_s >= 0")
        self.runner, self.max_batch, self.max_wait_s = runner, max_batch, max_wait_s
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self.queue_size = queue_size
        self._held: list[Job] = []  # taken from the queue but left for a later batch
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="seqlab-batcher", daemon=True)
        self._thread.start()
        self.batches = 0
        self.jobs_done = 0

    @property
    def waiting(self) -> int:
        return self.jobs.qsize() + len(self._held)

    async def submit(self, job: Job) -> Any:
        """Queue ``job`` and wait for its result.

        Raises:
            QueueFull: the queue holds ``queue_size`` jobs already.
        """
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        return await job.future

    def close(self) -> None:
        self.jobs.put(None)
        self._thread.join(timeout=10)

    # -- the model thread -----------------------------------------------------------------
    def _next(self, timeout: float) -> Job | None:
        """A waiting job within ``timeout`` seconds, or None (also once closing)."""
        try:
            job = self.jobs.get(timeout=timeout) if timeout > 0 else self.jobs.get_nowait()
        except queue.Empty:
            return None
        if job is None:
            self._closing = True
        return job

    def _gather(self) -> list[Job] | None:
        """The next batch: the oldest job and companions with its key; None once closed."""
        if self._closing and not self._held:
            return None
        first = self._held.pop(0) if self._held else self.jobs.get()
        if first is None:
            return None
        batch, others = [first], []
        for job in list(self._held):
            if len(batch) < self.max_batch and job.key == first.key:
                batch.append(job)
                self._held.remove(job)
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            job = self._next(deadline - time.monotonic())
            if job is None:
                if self._closing or time.monotonic() >= deadline:
                    break
                continue
            (batch if job.key == first.key else others).append(job)
        self._held += others
        return batch

    def _work(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            live = [job for job in batch if not job.future.cancelled()]
            if not live:
                continue
            try:
                results = self.runner(live)
            except Exception as e:  # noqa: BLE001 - handed to every waiting request
                for job in live:
                    job.loop.call_soon_threadsafe(_fail, job.future, e)
            else:
                for job, result in zip(live, results):
                    job.loop.call_soon_threadsafe(_succeed, job.future, result)
            self.batches += 1
            self.jobs_done += len(live)


def _succeed(future: asyncio.Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
