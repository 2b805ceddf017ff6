"""The queue between the HTTP handlers and the device: one worker thread merges requests into engine calls.

Handlers tokenise off the event loop and :meth:`Batcher.submit` the token ids. Each input waits
in the queue of its length bucket (the engine's fixed padded lengths). The worker thread
repeatedly picks a bucket and runs its waiting inputs, from whichever requests they came, through
one :meth:`~gte_jax.GTEEncoder.encode_tokens` call, and resolves a request's future once all its
vectors are in. A vector is what :meth:`~gte_jax.GTEEncoder.encode` gives for the same text,
whatever shares the call with it: the engine pads every text to a fixed length bucket and nothing
crosses between rows.

Which bucket runs next (one call = whole device steps of one bucket):

1. If everything waiting fits in one device step, all of it runs at once (light load: lowest latency).
2. Otherwise full steps go first, as many as ``max_batch_tokens`` allows, from the bucket whose
   oldest input has waited longest; a bucket that cannot fill a step waits for more inputs
   unless nothing else can fill one or its oldest input has waited :data:`MAX_HOLD_SECONDS`.

Merging per bucket keeps the padding of a loaded server close to that of one big offline
``encode`` call: merging whole requests instead pads a partial step in every bucket of every call.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gte_jax import batching

log = logging.getLogger("gte_jax.serve")

# The longest an input waits for its bucket to fill a device step while other buckets can.
MAX_HOLD_SECONDS = 0.25


class ShuttingDown(RuntimeError):
    """The batcher was closed (or its worker stopped): it takes no new work."""


class Job:
    """One request's inputs on their way through the engine."""

    def __init__(self, token_ids: list[np.ndarray], normalize: bool, dim: int, loop: asyncio.AbstractEventLoop):
        self.token_ids = token_ids
        self.normalize = normalize
        self.out = np.empty((len(token_ids), dim), dtype=np.float32)
        self.future: asyncio.Future[np.ndarray] = loop.create_future()
        self.loop = loop
        self.waiting = len(token_ids)  # inputs still in the queue (under the batcher's lock)
        self.finished = 0  # inputs whose vectors are in ``out`` (worker thread only)
        self.submitted = time.perf_counter()
        self.started = 0.0  # when its first input went to the engine (0: not yet)

    def __len__(self) -> int:
        return len(self.token_ids)

    def resolve(self) -> None:
        """Hands ``out`` to the waiting handler (from the worker thread)."""
        self._call(lambda: self.future.set_result(self.out))

    def fail(self, error: BaseException) -> None:
        """Raises ``error`` in the waiting handler (from the worker thread)."""
        self._call(lambda: self.future.set_exception(error))

    def _call(self, settle: Callable[[], None]) -> None:
        def once() -> None:
            if not self.future.done():  # else the handler gave up on it (client gone)
                settle()

        try:
            self.loop.call_soon_threadsafe(once)
        except RuntimeError:  # the event loop is closed: nobody waits any more
            pass


# One queued input: its request and its index there.
Entry = tuple[Job, int]


class Batcher:
    """Merges queued requests' inputs, bucket by bucket, into engine calls on one worker thread.

    Args:
        encoder: a :class:`~gte_jax.GTEEncoder` on a mesh of this process's devices.
        max_batch_tokens: most padded tokens one engine call runs (at least one device step).
        metrics: a :class:`~gte_jax.serve.metrics.Metrics`, or None.
    """

    def __init__(self, encoder: Any, *, max_batch_tokens: int, metrics: Any = None):
        self.encoder = encoder
        self.max_batch_tokens = max_batch_tokens
        self.metrics = metrics
        runner = encoder.runner
        self.buckets: tuple[int, ...] = runner.buckets
        # Rows of one full device step per bucket, exactly as the engine plans them.
        self.rows = {
            b: batching.rows_cap(
                b,
                batch_size=encoder.batch_size,
                max_batch_tokens=runner.max_batch_tokens,
                multiple_of=runner.multiple_of,
            )
            for b in self.buckets
        }
        self._cond = threading.Condition()
        # (normalize, bucket) -> inputs waiting, oldest first
        self._queues: dict[tuple[bool, int], collections.deque[Entry]] = {
            (n, b): collections.deque() for n in (True, False) for b in self.buckets
        }
        self._queued_inputs = 0
        self._queued_requests = 0
        self._closing = False
        self._broken: BaseException | None = None  # why the worker stopped, if it did
        self._thread = threading.Thread(target=self._run, name="gte-jax-batcher", daemon=True)

    @property
    def queued_requests(self) -> int:
        """Requests with inputs not yet handed to the engine."""
        return self._queued_requests

    @property
    def queued_inputs(self) -> int:
        """Inputs not yet handed to the engine."""
        return self._queued_inputs

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def submit(self, token_ids: list[np.ndarray], *, normalize: bool) -> Job:
        """Queues one request's token ids; await ``job.future`` for its ``[n, dim]`` vectors (on the event loop).

        Raises:
            ShuttingDown: :meth:`close` was called.
        """
        job = Job(token_ids, normalize, self.encoder.dim, asyncio.get_running_loop())
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if self._broken is not None:
                raise ShuttingDown(f"the engine worker stopped ({self._broken!r}); restart the server")
            for i, ids in enumerate(token_ids):
                self._queues[normalize, batching.bucket_for(len(ids), self.buckets)].append((job, i))
            self._queued_inputs += len(job)
            self._queued_requests += 1
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> int:
        """Drops the inputs of ``job`` that have not reached the engine yet (its client left); returns how many."""
        dropped = self._drop(job)
        if self.metrics is not None and dropped:
            self.metrics.cancelled_inputs.inc(dropped)
        return dropped

    def _drop(self, job: Job) -> int:
        with self._cond:
            dropped = job.waiting
            if not dropped:
                return 0
            for key, queue in self._queues.items():
                if any(j is job for j, _ in queue):
                    self._queues[key] = collections.deque(e for e in queue if e[0] is not job)
            job.waiting = 0
            self._queued_inputs -= dropped
            self._queued_requests -= 1
        return dropped

    def close(self, timeout: float | None = None) -> None:
        """Takes no new work, finishes what is queued, and stops the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _pick(self) -> tuple[bool, list[Entry]]:
        """The next engine call's inputs (see the module docstring); the queue is not empty."""
        waiting = {key: q for key, q in self._queues.items() if q}
        oldest = min(waiting, key=lambda key: waiting[key][0][0].submitted)
        normalize = oldest[0]
        mine = {b: q for (n, b), q in waiting.items() if n == normalize}
        longest = max(mine)
        if sum(len(q) for q in mine.values()) <= self.rows[longest]:  # one step holds it all
            entries = [e for q in mine.values() for e in q]
            for q in mine.values():
                q.clear()
            return normalize, entries
        bucket = oldest[1]
        full = [b for b, q in mine.items() if len(q) >= self.rows[b]]
        held = time.perf_counter() - mine[bucket][0][0].submitted
        if bucket not in full and full and held < MAX_HOLD_SECONDS:
            bucket = min(full, key=lambda b: mine[b][0][0].submitted)
        queue, rows = mine[bucket], self.rows[bucket]
        if len(queue) >= rows:  # whole steps, as many as the token budget allows
            take = min(len(queue) // rows, max(1, self.max_batch_tokens // (rows * bucket))) * rows
        else:  # one partial step
            take = len(queue)
        return normalize, [queue.popleft() for _ in range(take)]

    def _take(self) -> tuple[bool, list[Entry]] | None:
        """The next engine call: ``(normalize, entries)``; None once closed and drained."""
        with self._cond:
            while not self._queued_inputs and not self._closing:
                self._cond.wait()
            if not self._queued_inputs:
                return None
            normalize, entries = self._pick()
            now = time.perf_counter()
            for job, _ in entries:
                job.waiting -= 1
                if not job.waiting:
                    self._queued_requests -= 1
                if not job.started:
                    job.started = now
                    if self.metrics is not None:
                        self.metrics.stage.labels("queue").observe(now - job.submitted)
            self._queued_inputs -= len(entries)
            return normalize, entries

    def _run(self) -> None:
        try:
            while (work := self._take()) is not None:
                self._step(*work)
        except BaseException as e:  # a bug here: answer every waiting request, and /health reports the stop
            log.exception("the batcher's worker stopped")
            with self._cond:
                self._broken = e
                jobs = {job for queue in self._queues.values() for job, _ in queue}
            self._fail(jobs, e)
            raise

    def _step(self, normalize: bool, entries: list[Entry]) -> None:
        """One engine call; fills in the vectors and resolves the requests that are complete."""
        ids = [job.token_ids[i] for job, i in entries]
        began = time.perf_counter()
        try:
            vectors = self.encoder.encode_tokens(ids, normalize=normalize)
        except Exception as e:  # a device or runtime failure: fail these requests, keep serving the others
            log.exception("engine call on %d inputs failed", len(ids))
            self._fail({job for job, _ in entries}, e)
            return
        if self.metrics is not None:
            requests = len({id(job) for job, _ in entries})
            self.metrics.observe_batch(len(ids), sum(map(len, ids)), requests, time.perf_counter() - began)
        for (job, i), vector in zip(entries, vectors, strict=True):
            job.out[i] = vector
            job.finished += 1
            if job.finished == len(job):
                if self.metrics is not None:
                    self.metrics.stage.labels("inference").observe(time.perf_counter() - job.started)
                job.resolve()

    def _fail(self, jobs: set[Job], error: BaseException) -> None:
        for job in jobs:
            self._drop(job)  # its inputs still queued can no longer make a whole answer
            job.fail(error)
