"""Batch planning: sort by token length, pad to fixed buckets, size batches by a token budget.

Every batch has a shape drawn from a small fixed set (length bucket x row
bucket), so the number of compiled programs is bounded however many texts
come through.
"""

from __future__ import annotations

import dataclasses

import numpy as np

LENGTH_BUCKETS = (16, 32, 64, 128, 256, 384, 512)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Texts ``indices`` (into the caller's list) padded to ``[rows, length]``."""

    indices: np.ndarray
    rows: int
    length: int


def length_buckets(max_length: int) -> tuple[int, ...]:
    """The padded lengths used for a model truncating at ``max_length``."""
    return tuple(b for b in LENGTH_BUCKETS if b < max_length) + (max_length,)


def bucket_for(length: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``length`` tokens."""
    i = int(np.searchsorted(buckets, length))
    return buckets[min(i, len(buckets) - 1)]


def rows_cap(length: int, *, batch_size: int, max_batch_tokens: int, multiple_of: int) -> int:
    """Most rows a batch of ``length`` tokens may have: the smaller of ``batch_size`` and the token budget."""
    rows = min(batch_size, max(1, max_batch_tokens // length))
    return max(multiple_of, rows - rows % multiple_of)


def row_bucket(n: int, cap: int, multiple_of: int) -> int:
    """Rows to pad ``n`` texts to: the next power of two (a multiple of ``multiple_of``), at most ``cap``."""
    rows = multiple_of
    while rows < n:
        rows *= 2
    return min(rows, cap)


def plan_batches(
    lengths: np.ndarray,
    *,
    buckets: tuple[int, ...],
    batch_size: int,
    max_batch_tokens: int,
    multiple_of: int = 1,
) -> list[Batch]:
    """Groups texts of the given token ``lengths`` into padded batches, longest first.

    A call that fits in one batch (a query, a handful of texts) gets the
    smallest row bucket that holds it. A bigger call runs only full batches of
    ``rows_cap(length)`` rows, each padded to the bucket of its longest text:
    the tail of one bucket rides along with the longest texts of the next, so
    no batch but the last is partly empty, and every shape is one of the few
    ``(rows_cap(L), L)``: a second large call compiles nothing new.

    Args:
        lengths: tokens per text (special tokens included).
        buckets: padded lengths, ascending; the last is the truncation length.
        batch_size: most rows in a batch.
        max_batch_tokens: most ``rows * length`` in a batch; long texts get fewer rows.
        multiple_of: rows are a multiple of this (the number of data-parallel devices).
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")  # longest first: the biggest programs compile first
    padded = [bucket_for(int(n), buckets) for n in lengths[order]]

    def cap(length):
        return rows_cap(length, batch_size=batch_size, max_batch_tokens=max_batch_tokens, multiple_of=multiple_of)

    n = len(order)
    if n == 0:
        return []
    if n <= cap(padded[0]):
        return [Batch(order, row_bucket(n, cap(padded[0]), multiple_of), padded[0])]
    batches = []
    start = 0
    while start < n:
        length = padded[start]
        stop = min(start + cap(length), n)
        batches.append(Batch(order[start:stop], cap(length), length))
        start = stop
    return batches


def all_shapes(
    buckets: tuple[int, ...], *, batch_size: int, max_batch_tokens: int, multiple_of: int = 1
) -> list[tuple[int, int]]:
    """Every ``(rows, length)`` that :func:`plan_batches` can produce: the programs to compile."""
    shapes = []
    for length in buckets:
        cap = rows_cap(length, batch_size=batch_size, max_batch_tokens=max_batch_tokens, multiple_of=multiple_of)
        rows = {row_bucket(n, cap, multiple_of) for n in range(1, cap + 1)}
        shapes += [(r, length) for r in sorted(rows)]
    return shapes


def bucket_counts(token_ids: list[np.ndarray], buckets: tuple[int, ...]) -> np.ndarray:
    """How many texts fall in each length bucket."""
    counts = np.zeros(len(buckets), dtype=np.int64)
    for t in token_ids:
        counts[buckets.index(bucket_for(len(t), buckets))] += 1
    return counts


def plan_lockstep(
    token_ids: list[np.ndarray],
    buckets: tuple[int, ...],
    *,
    most_per_bucket: np.ndarray,
    batch_size: int,
    max_batch_tokens: int,
    multiple_of: int,
) -> list[Batch]:
    """This process's part of a plan that every process runs in the same order with the same shapes.

    Each bucket gets as many full-size steps as the busiest process needs
    (``most_per_bucket``, from an all-gather); a process with fewer texts
    there pads its rows (or sends an empty part).
    """
    by_bucket: dict[int, list[int]] = {b: [] for b in buckets}
    for i, t in enumerate(token_ids):
        by_bucket[bucket_for(len(t), buckets)].append(i)
    plan = []
    for j in reversed(range(len(buckets))):
        length = buckets[j]
        cap = rows_cap(length, batch_size=batch_size, max_batch_tokens=max_batch_tokens, multiple_of=multiple_of)
        mine = np.asarray(by_bucket[length], dtype=np.int64)
        for step in range(-(-int(most_per_bucket[j]) // cap)):
            plan.append(Batch(mine[step * cap : (step + 1) * cap], cap, length))
    return plan


def pad_batch(token_ids: list[np.ndarray], batch: Batch, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)``, each ``[rows, length]`` int32, for a planned batch."""
    ids = np.full((batch.rows, batch.length), pad_id, dtype=np.int32)
    mask = np.zeros((batch.rows, batch.length), dtype=np.int32)
    for row, i in enumerate(batch.indices):
        t = token_ids[i]
        ids[row, : len(t)] = t
        mask[row, : len(t)] = 1
    return ids, mask
