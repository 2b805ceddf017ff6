"""The queue between the HTTP handlers and the device: one worker thread runs the engine's plan, fairly.

Handlers tokenise off the event loop and :meth:`Batcher.submit` the token ids. The worker runs rounds:

1. It hands the engine the token ids still waiting, from the requests at the front of the rotation,
   and takes the engine's plan (:meth:`~gte_jax.GTEEncoder.plan`): the engine alone decides how
   inputs are merged and padded into device steps, whatever the runner.
2. It picks at most ``round_steps`` of the planned steps, one per request in turn (the request whose
   last step is oldest first; one never served before any served one, in order of arrival), so a
   request's step can carry other requests' inputs too.
3. It runs them (:meth:`~gte_jax.GTEEncoder.encode_batches`), writes each vector into its request's
   answer as its step finishes, and answers each request whose vectors are all in.

The bound: a request's first step runs at most ``round_steps`` device steps after it is queued (the
round in progress), plus one step per request queued before it that has not had a step yet. A one-text
query sent while a 2,048-text request runs is answered after at most ``round_steps + 1`` steps.

A vector is what :meth:`~gte_jax.GTEEncoder.encode` gives for the same text whatever shares its step:
each row is padded to a fixed length bucket and nothing crosses between rows. A vector that is not
finite (a model with NaN weights, an overflow) is never sent: its request fails with a 500 naming the
cause, and ``/health`` answers 503 until a step is finite again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gte_jax.engine import batching
from gte_jax.serve import defaults

log = logging.getLogger("gte_jax.serve")

# A round plans the inputs of whole requests until it holds this many rounds' worth of full steps: enough to
# fill its steps, not so many that planning the queue costs more than the steps.
PLAN_AHEAD_ROUNDS = 4


class ShuttingDown(RuntimeError):
    """The batcher was closed (or its worker stopped): it takes no new work."""


class NonFiniteVectors(RuntimeError):
    """The model gave NaN or infinite values for some inputs: a broken model, never the client's fault."""


class Job:
    """One request's inputs on their way through the engine."""

    def __init__(
        self, token_ids: list[np.ndarray], normalize: bool, dim: int, loop: asyncio.AbstractEventLoop, seq: int
    ):
        self.token_ids = token_ids
        self.normalize = normalize
        self.seq = seq  # order of arrival
        self.out = np.empty((len(token_ids), dim), dtype=np.float32)
        self.future: asyncio.Future[np.ndarray] = loop.create_future()
        self.loop = loop
        self.queued = np.ones(len(token_ids), dtype=bool)  # not yet handed to the engine (under the lock)
        self.waiting = len(token_ids)  # how many are queued
        self.finished = 0  # inputs whose vectors are in ``out`` (worker thread only)
        self.turn = -1  # the round of its last step: the rotation serves the oldest first
        self.dropped = False  # its client left, or it failed: nothing more of it runs
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


def fair_steps(plan: list[batching.Batch], owners: np.ndarray, requests: int, limit: int) -> list[int]:
    """Which of ``plan``'s steps run this round, in order: one per request in turn, at most ``limit``.

    Args:
        plan: the engine's steps over the round's inputs.
        owners: for each input, the position of its request in the rotation (0 goes first).
        requests: how many requests the inputs come from.
        limit: the most steps a round runs.
    """
    steps_of: list[list[int]] = [[] for _ in range(requests)]
    for k, batch in enumerate(plan):
        for r in np.unique(owners[batch.indices]):
            steps_of[int(r)].append(k)
    chosen: list[int] = []
    taken: set[int] = set()
    cursors = [0] * requests
    while len(chosen) < limit:
        before = len(chosen)
        for r in range(requests):
            mine = steps_of[r]
            while cursors[r] < len(mine) and mine[cursors[r]] in taken:
                cursors[r] += 1
            if cursors[r] < len(mine) and len(chosen) < limit:
                chosen.append(mine[cursors[r]])
                taken.add(mine[cursors[r]])
        if len(chosen) == before:
            break
    return chosen


class Round:
    """The steps of one round: the engine's batches over ``entries`` (the inputs as ``(job, index)``)."""

    def __init__(self, normalize: bool, entries: list[tuple[Job, int]], batches: list[batching.Batch]):
        self.normalize = normalize
        self.entries = entries
        self.batches = batches
        self.token_ids = [job.token_ids[i] for job, i in entries]


class Batcher:
    """Runs the queued requests' inputs through the engine in fair rounds on one worker thread.

    Args:
        encoder: a :class:`~gte_jax.GTEEncoder` on a mesh of this process's devices.
        round_steps: the most device steps a round runs before the queue is read again.
        metrics: a :class:`~gte_jax.serve.metrics.Metrics`, or None.
    """

    def __init__(self, encoder: Any, *, round_steps: int = defaults.ROUND_STEPS, metrics: Any = None):
        self.encoder = encoder
        self.round_steps = round_steps
        self.metrics = metrics
        self.plan_inputs = PLAN_AHEAD_ROUNDS * round_steps * encoder.batch_size
        self._cond = threading.Condition()
        self._jobs: list[Job] = []  # requests with queued inputs
        self._seq = itertools.count()
        self._rounds = 0
        self._queued_inputs = 0
        self._closing = False
        self._broken: BaseException | None = None  # why the worker stopped, if it did
        self.nonfinite: str | None = None  # why the last step's vectors could not be sent, if they could not
        self._thread = threading.Thread(target=self._run, name="gte-jax-batcher", daemon=True)

    @property
    def queued_requests(self) -> int:
        """Requests with inputs not yet handed to the engine."""
        return len(self._jobs)

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
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if self._broken is not None:
                raise ShuttingDown(f"the engine worker stopped ({self._broken!r}); restart the server")
            job = Job(token_ids, normalize, self.encoder.dim, asyncio.get_running_loop(), next(self._seq))
            self._jobs.append(job)
            self._queued_inputs += len(job)
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
            job.dropped = True
            dropped = job.waiting
            if dropped:
                job.queued[:] = False
                job.waiting = 0
                self._queued_inputs -= dropped
                self._jobs.remove(job)
        return dropped

    def close(self, timeout: float | None = None) -> None:
        """Takes no new work, finishes what is queued, and stops the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _candidates(self) -> tuple[bool, list[Job], list[tuple[Job, int]], np.ndarray] | None:
        """The next round's requests in rotation order, their queued inputs as ``(job, index)``, and each
        input's request (its position in that order); None once closed and drained."""
        with self._cond:
            while not self._jobs and not self._closing:
                self._cond.wait()
            if not self._jobs:
                return None
            rotation = sorted(self._jobs, key=lambda j: (j.turn, j.seq))
            normalize = rotation[0].normalize
            jobs: list[Job] = []
            entries: list[tuple[Job, int]] = []
            for job in rotation:
                if job.normalize == normalize and len(entries) < self.plan_inputs:
                    jobs.append(job)
                    entries += [(job, int(i)) for i in np.flatnonzero(job.queued)]
            owners = np.concatenate([np.full(job.waiting, r) for r, job in enumerate(jobs)])
            return normalize, jobs, entries, owners

    def _next_round(self) -> Round | None:
        """The next round (see the module docstring); None once closed and drained."""
        picked = self._candidates()
        if picked is None:
            return None
        normalize, jobs, entries, owners = picked
        # Planned outside the lock, so handlers never wait on it; a client that leaves meanwhile is skipped below.
        plan = self.encoder.plan([job.token_ids[i] for job, i in entries])
        chosen = [plan[k] for k in fair_steps(plan, owners, len(jobs), self.round_steps)]
        with self._cond:
            self._rounds += 1
            kept: list[tuple[Job, int]] = []
            batches = []
            now = time.perf_counter()
            for batch in chosen:
                indices = []
                for k in batch.indices:
                    job, i = entries[k]
                    if job.dropped:
                        continue
                    indices.append(len(kept))
                    kept.append((job, i))
                    job.queued[i] = False
                    job.waiting -= 1
                    self._queued_inputs -= 1
                    job.turn = self._rounds
                    if not job.waiting:
                        self._jobs.remove(job)
                    if not job.started:
                        job.started = now
                        if self.metrics is not None:
                            self.metrics.stage.labels("queue").observe(now - job.submitted)
                if indices:
                    batches.append(batching.Batch(np.asarray(indices, dtype=np.int64), batch.rows, batch.length))
        return Round(normalize, kept, batches)

    def _run(self) -> None:
        try:
            while (work := self._next_round()) is not None:
                self._steps(work)
        except BaseException as e:  # a bug here: answer every waiting request, and /health reports the stop
            log.exception("the batcher's worker stopped")
            with self._cond:
                self._broken = e
                jobs = set(self._jobs)
            self._fail(jobs, e)
            raise

    def _steps(self, work: Round) -> None:
        """Runs one round's steps; fills in the vectors and answers the requests that are complete."""
        began = time.perf_counter()
        steps = iter(self.encoder.encode_batches(work.token_ids, work.batches, normalize=work.normalize))
        for batch in work.batches:
            try:
                indices, vectors = next(steps)
            except Exception as e:  # a device or runtime failure: fail this round's requests, keep serving others
                log.exception("an engine step on %d inputs failed", len(batch.indices))
                self._fail({job for job, _ in work.entries if job.finished < len(job)}, e)
                return
            now = time.perf_counter()
            self._observe(work, batch, now - began)
            began = now
            self._deliver(work, indices, vectors)

    def _observe(self, work: Round, batch: batching.Batch, seconds: float) -> None:
        if self.metrics is None:
            return
        tokens = sum(len(work.token_ids[k]) for k in batch.indices)
        requests = len({id(work.entries[k][0]) for k in batch.indices})
        self.metrics.observe_step(len(batch.indices), tokens, batch.rows * batch.length, requests, seconds)

    def _deliver(self, work: Round, indices: np.ndarray, vectors: np.ndarray) -> None:
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            self.nonfinite = (
                f"the model gave NaN or infinite values for {int((~finite).sum())} of the {len(indices)} inputs of "
                "a device step; its weights may be corrupt (check the checkpoint) or the dtype may overflow "
                "(try --dtype float32)"
            )
            log.error("%s", self.nonfinite)
            bad = {work.entries[k][0] for k, ok in zip(indices, finite, strict=True) if not ok}
            self._fail(bad, NonFiniteVectors(self.nonfinite))
        else:
            self.nonfinite = None
        for k, vector in zip(indices, vectors, strict=True):
            job, i = work.entries[k]
            if job.dropped:
                continue
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
