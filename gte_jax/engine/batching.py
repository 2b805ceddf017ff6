"""Batch planning: sort by token length, pad to fixed buckets, size batches by a token budget.

Every batch has a shape drawn from a small fixed set (length bucket x row
bucket), so the number of compiled programs is bounded however many texts
come through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

# Fine steps (4 tokens up to 32, then 8, 16, 32): padding costs compute on every step, a shape compiles
# once. On STS-B sentences (5-43 tokens) powers-of-two-and-a-half buckets (16, 24, 32, 48, ...) padded 38%
# more tokens than there are; these pad 12%, and encode runs 10-17% faster on CPU (bench/README.md).
LENGTH_BUCKETS: tuple[int, ...] = (8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256)
LENGTH_BUCKETS += (288, 320, 352, 384, 416, 448, 480, 512)
# Past 512 (the 8,192-token families), steps of 1/8 to 1/4: without them a 600-token text padded to
# max_length, 8,192, and paid 14x the tokens and ~190x the attention work.
LENGTH_BUCKETS += (640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192)

# The lengths a small call (one batch of fewer rows than the cap: a query, a handful of texts) pads to.
# Only these get the smaller row buckets, which keeps the programs to compile near one per length
# bucket plus a few per small-call length.
SMALL_CALL_LENGTHS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

# (batch_size, max_batch_tokens) by backend. On CPU a step of ~1,024 tokens runs fastest: bigger
# steps do not run faster (bench/README.md); 64 rows lets short texts fill it. Accelerators want long
# steps to stay busy.
DEFAULT_BATCHING = {"cpu": (64, 1024)}
ACCELERATOR_BATCHING = (256, 65536)


def default_batching(backend: str) -> tuple[int, int]:
    """``(batch_size, max_batch_tokens)`` for a JAX backend name."""
    return DEFAULT_BATCHING.get(backend, ACCELERATOR_BATCHING)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Texts ``indices`` (into the caller's list) padded to ``[rows, length]``."""

    indices: np.ndarray
    rows: int
    length: int


def length_buckets(max_length: int) -> tuple[int, ...]:
    """The padded lengths used for a model truncating at ``max_length``."""
    return tuple(b for b in LENGTH_BUCKETS if b < max_length) + (max_length,)


def small_call_buckets(buckets: tuple[int, ...]) -> tuple[int, ...]:
    """The buckets a small call pads to: those in :data:`SMALL_CALL_LENGTHS`, and the longest."""
    return tuple(b for b in buckets[:-1] if b in SMALL_CALL_LENGTHS) + buckets[-1:]


def bucket_for(length: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``length`` tokens."""
    i = int(np.searchsorted(buckets, length))
    return buckets[min(i, len(buckets) - 1)]


def bucket_lengths(lengths: np.ndarray, buckets: tuple[int, ...]) -> np.ndarray:
    """:func:`bucket_for` of each of ``lengths`` at once (the server plans its queue every few steps)."""
    table = np.asarray(buckets, dtype=np.int64)
    return table[np.minimum(np.searchsorted(table, lengths), len(table) - 1)]


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

    A call that fits in one batch (a query, a handful of texts) is padded to a
    small-call length (:func:`small_call_buckets`) and gets the smallest row
    bucket that holds it: low latency, few programs. One that fits in one full
    batch of its longest text's bucket runs as that batch. A bigger call runs every
    length bucket as batches of exactly ``rows_cap(L)`` rows, the bucket's last
    batch padded with empty rows, so a bulk call compiles at most one program
    per length bucket, and once a bucket has been seen it never compiles again.

    Args:
        lengths: tokens per text (special tokens included).
        buckets: padded lengths, ascending; the last is the truncation length.
        batch_size: most rows in a batch.
        max_batch_tokens: most ``rows * length`` in a batch; long texts get fewer rows.
        multiple_of: rows are a multiple of this (the number of data-parallel devices).
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")  # longest first: the biggest programs compile first
    padded = bucket_lengths(lengths[order], buckets)

    def cap(length: int) -> int:
        return rows_cap(length, batch_size=batch_size, max_batch_tokens=max_batch_tokens, multiple_of=multiple_of)

    if len(order) == 0:
        return []
    small = bucket_for(int(lengths[order[0]]), small_call_buckets(buckets))
    if len(order) <= cap(small):
        return [Batch(order, row_bucket(len(order), cap(small), multiple_of), small)]
    # One full step at the longest text's bucket: never more padding than the bulk plan, whose first step it is.
    fine = bucket_for(int(lengths[order[0]]), buckets)
    if len(order) <= cap(fine):
        return [Batch(order, cap(fine), fine)]
    batches = []
    for length in sorted(set(padded.tolist()), reverse=True):
        members = order[padded == length]
        rows = cap(length)
        batches += [Batch(members[i : i + rows], rows, length) for i in range(0, len(members), rows)]
    return batches


def all_shapes(
    buckets: tuple[int, ...], *, batch_size: int, max_batch_tokens: int, multiple_of: int = 1
) -> list[tuple[int, int]]:
    """Every ``(rows, length)`` that :func:`plan_batches` can produce: the programs to compile."""
    shapes = []
    small = small_call_buckets(buckets)
    for length in buckets:
        cap = rows_cap(length, batch_size=batch_size, max_batch_tokens=max_batch_tokens, multiple_of=multiple_of)
        rows = {row_bucket(n, cap, multiple_of) for n in range(1, cap + 1)} if length in small else {cap}
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
    rows: Callable[[int], int],
) -> list[Batch]:
    """This process's part of a plan that every process runs in the same order with the same shapes.

    Each bucket gets as many steps of ``rows(length)`` rows as the busiest process needs
    (``most_per_bucket``, from an all-gather); a process with fewer texts there pads its
    rows (or sends an empty part).
    """
    by_bucket: dict[int, list[int]] = {b: [] for b in buckets}
    for i, t in enumerate(token_ids):
        by_bucket[bucket_for(len(t), buckets)].append(i)
    plan = []
    for j in reversed(range(len(buckets))):
        length = buckets[j]
        cap = rows(length)
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
