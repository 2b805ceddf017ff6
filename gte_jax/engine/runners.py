"""Execution: how planned batches reach the devices, one runner per mode.

``LocalRunner`` drives a mesh of this process's devices (or, without
``jax.distributed``, all devices). ``LockstepRunner`` drives a mesh that spans
several processes: every process runs the same sequence of global batch shapes
and fills its own rows with its own texts. Each runner owns its planning and
its warm-up, so that :meth:`Runner.shapes` is exactly the set of shapes
:meth:`Runner.run` can execute. Callers plan first (:meth:`Runner.plan`), may run any
part of the plan, and get each batch's results back from :meth:`Runner.run` as it finishes.

``batch_size`` and ``max_batch_tokens`` mean the same in both: the most rows and
padded tokens of one step, across all devices of the mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import jax
import numpy as np
from jax.sharding import Mesh

from gte_jax.engine import batching, sharding

# (input_ids, attention_mask) -> [rows, dim] vectors, on the mesh.
Step = Callable[[jax.Array, jax.Array], jax.Array]
# One finished batch: the indices of its token-id lists and their results (one row each), on the host.
Result = tuple[np.ndarray, np.ndarray]


class Runner(Protocol):
    """Plans and runs batches of token ids on a mesh."""

    def plan(self, token_ids: list[np.ndarray], batch_size: int) -> list[batching.Batch]:
        """The batches :meth:`run` executes for these token ids (this process's rows)."""
        ...

    def shapes(self, batch_size: int, lengths: Iterable[int] | None = None) -> list[tuple[int, int]]:
        """Every global ``(rows, length)`` that :meth:`run` can execute: the programs to compile."""
        ...

    def run(self, step: Step, token_ids: list[np.ndarray], batches: list[batching.Batch]) -> Iterator[Result]:
        """Runs ``batches`` (from :meth:`plan` of these ``token_ids``) in order, yielding each one's
        ``(indices, results)`` on the host as it finishes: ``results[j]`` belongs to ``token_ids[indices[j]]``."""
        ...

    def warm(self, step: Step, shapes: list[tuple[int, int]]) -> None:
        """Runs ``step`` once on every shape (compiling it)."""
        ...


class LocalRunner:
    """One process drives every device of the mesh; batches are split over its ``data`` axis."""

    def __init__(self, mesh: Mesh, buckets: tuple[int, ...], max_batch_tokens: int, pad_id: int):
        self.mesh = mesh
        self.buckets = buckets
        self.max_batch_tokens = max_batch_tokens
        self.pad_id = pad_id
        self.multiple_of = sharding.data_parallelism(mesh)
        self.in_sharding = sharding.batch_sharding(mesh)

    def plan(self, token_ids: list[np.ndarray], batch_size: int) -> list[batching.Batch]:
        return batching.plan_batches(
            np.array([len(t) for t in token_ids], dtype=np.int64),
            buckets=self.buckets,
            batch_size=batch_size,
            max_batch_tokens=self.max_batch_tokens,
            multiple_of=self.multiple_of,
        )

    def shapes(self, batch_size: int, lengths: Iterable[int] | None = None) -> list[tuple[int, int]]:
        shapes = batching.all_shapes(
            self.buckets, batch_size=batch_size, max_batch_tokens=self.max_batch_tokens, multiple_of=self.multiple_of
        )
        return _only_buckets(shapes, self.buckets, lengths)

    def run(self, step: Step, token_ids: list[np.ndarray], batches: list[batching.Batch]) -> Iterator[Result]:
        def steps() -> Iterator[tuple[np.ndarray, jax.Array]]:
            for batch in batches:
                ids, mask = batching.pad_batch(token_ids, batch, self.pad_id)
                ids, mask = jax.device_put((ids, mask), self.in_sharding)
                yield batch.indices, step(ids, mask)

        return pipelined(steps(), np.asarray)

    def warm(self, step: Step, shapes: list[tuple[int, int]]) -> None:
        for rows, length in shapes:
            zeros = jax.device_put(np.zeros((rows, length), np.int32), self.in_sharding)
            step(zeros, zeros).block_until_ready()


class LockstepRunner:
    """Processes of ``jax.distributed`` in lockstep over one mesh: a collective, every process calls it.

    Per length bucket, every process runs as many full-size steps as the busiest process
    needs (counts are all-gathered first); a process with fewer texts pads its rows. A
    step's global rows are ``processes * per_process_rows``.
    """

    def __init__(self, mesh: Mesh, buckets: tuple[int, ...], max_batch_tokens: int, pad_id: int):
        self.mesh = mesh
        self.buckets = buckets
        self.max_batch_tokens = max_batch_tokens
        self.pad_id = pad_id
        self.processes = len({d.process_index for d in mesh.devices.flat})
        self.local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
        self.in_sharding = sharding.batch_sharding(mesh)

    def _rows(self, length: int, batch_size: int) -> int:
        """This process's rows in a step of ``length`` tokens."""
        return batching.rows_cap(
            length,
            batch_size=max(1, batch_size // self.processes),
            max_batch_tokens=max(1, self.max_batch_tokens // self.processes),
            multiple_of=self.local_devices,
        )

    def _most_per_bucket(self, token_ids: list[np.ndarray]) -> np.ndarray:
        """The busiest process's count of texts in each bucket (an all-gather)."""
        from jax.experimental import multihost_utils

        counts = batching.bucket_counts(token_ids, self.buckets)
        return np.asarray(multihost_utils.process_allgather(counts)).max(axis=0)  # [buckets]

    def most_of(self, n: int) -> int:
        """The largest ``n`` any process passes (an all-gather): how many collective rounds all must run."""
        from jax.experimental import multihost_utils

        return int(np.asarray(multihost_utils.process_allgather(np.int32(n))).max())

    def plan(self, token_ids: list[np.ndarray], batch_size: int) -> list[batching.Batch]:
        most = self._most_per_bucket(token_ids)
        return batching.plan_lockstep(
            token_ids, self.buckets, most_per_bucket=most, rows=lambda length: self._rows(length, batch_size)
        )

    def shapes(self, batch_size: int, lengths: Iterable[int] | None = None) -> list[tuple[int, int]]:
        shapes = [(self._rows(length, batch_size) * self.processes, length) for length in self.buckets]
        if lengths is not None:  # every process must warm the same shapes: take the union of their samples
            from jax.experimental import multihost_utils

            wanted = np.zeros(len(self.buckets), dtype=np.int32)
            for n in lengths:
                wanted[self.buckets.index(batching.bucket_for(n, self.buckets))] = 1
            union = np.asarray(multihost_utils.process_allgather(wanted)).max(axis=0)
            keep = {b for b, w in zip(self.buckets, union, strict=True) if w}
            shapes = [s for s in shapes if s[1] in keep]
        return shapes

    def _global(self, local: np.ndarray) -> jax.Array:
        shape = (local.shape[0] * self.processes, local.shape[1])
        return jax.make_array_from_process_local_data(self.in_sharding, local, shape)

    def run(self, step: Step, token_ids: list[np.ndarray], batches: list[batching.Batch]) -> Iterator[Result]:
        from jax.experimental import multihost_utils

        def steps() -> Iterator[tuple[np.ndarray, jax.Array]]:
            for batch in batches:
                ids, mask = batching.pad_batch(token_ids, batch, self.pad_id)
                yield batch.indices, step(self._global(ids), self._global(mask))

        def to_local(vectors: jax.Array) -> np.ndarray:
            spec = self.in_sharding.spec
            return np.asarray(multihost_utils.global_array_to_host_local_array(vectors, self.mesh, spec))

        return pipelined(steps(), to_local)

    def warm(self, step: Step, shapes: list[tuple[int, int]]) -> None:
        self._most_per_bucket([])  # the planning all-gathers are programs too
        self.most_of(0)
        for rows, length in shapes:
            zeros = self._global(np.zeros((rows // self.processes, length), np.int32))
            step(zeros, zeros).block_until_ready()


def for_mesh(mesh: Mesh, buckets: tuple[int, ...], max_batch_tokens: int, pad_id: int) -> Runner:
    """The runner for ``mesh``: lockstep when it spans several processes, else local."""
    kind = LockstepRunner if sharding.is_multiprocess(mesh) else LocalRunner
    return kind(mesh, buckets, max_batch_tokens, pad_id)


def pipelined(
    steps: Iterable[tuple[np.ndarray, jax.Array]], to_host: Callable[[jax.Array], np.ndarray]
) -> Iterator[Result]:
    """(indices, device result) pairs brought to the host in order, while the next batches are dispatched."""
    pending: list[tuple[np.ndarray, jax.Array]] = []

    def drain(indices: np.ndarray, vectors: jax.Array) -> Result:
        return indices, to_host(vectors)[: len(indices)]

    # Dispatch is asynchronous: padding batch k+1 on the host overlaps the device's work on batch k;
    # only results two steps old are fetched, which bounds the device memory they hold.
    for item in steps:
        pending.append(item)
        if len(pending) > 2:
            yield drain(*pending.pop(0))
    for item in pending:
        yield drain(*item)


def _only_buckets(
    shapes: list[tuple[int, int]], buckets: tuple[int, ...], lengths: Iterable[int] | None
) -> list[tuple[int, int]]:
    """``shapes`` of the length buckets that texts of ``lengths`` tokens fall in, in a bulk call or a small
    one (all when None)."""
    if lengths is None:
        return shapes
    lengths = list(lengths)
    small = batching.small_call_buckets(buckets)
    wanted = {batching.bucket_for(n, buckets) for n in lengths} | {batching.bucket_for(n, small) for n in lengths}
    return [s for s in shapes if s[1] in wanted]
