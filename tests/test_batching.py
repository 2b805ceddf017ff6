"""Batch planning, as properties over random lengths, batch sizes and process counts.

Whatever comes in: every text is planned exactly once, a batch never holds more texts
than rows, and every planned shape is one that warm-up compiles.
"""

from __future__ import annotations

import numpy as np
import pytest

from gte_jax.engine import batching


def _setting(rng):
    max_length = int(rng.choice([32, 128, 256, 512]))
    buckets = batching.length_buckets(max_length)
    lengths = rng.integers(2, max_length + 1, size=int(rng.integers(0, 400)))
    return (
        buckets,
        lengths,
        int(rng.integers(1, 300)),  # batch_size
        int(rng.choice([512, 1024, 4096, 65536])),  # max_batch_tokens
        int(rng.choice([1, 2, 4, 8])),  # multiple_of (data-parallel devices)
    )


@pytest.mark.parametrize("seed", range(40))
def test_plan_batches_covers_every_text_once_in_warmed_shapes(seed):
    buckets, lengths, batch_size, budget, multiple_of = _setting(np.random.default_rng(seed))
    kw = dict(batch_size=batch_size, max_batch_tokens=budget, multiple_of=multiple_of)
    plan = batching.plan_batches(lengths, buckets=buckets, **kw)
    planned = np.concatenate([b.indices for b in plan]) if plan else np.array([], dtype=np.int64)
    assert sorted(planned.tolist()) == list(range(len(lengths)))
    shapes = set(batching.all_shapes(buckets, **kw))
    for b in plan:
        assert (b.rows, b.length) in shapes
        assert len(b.indices) <= b.rows and b.rows % multiple_of == 0
        assert lengths[b.indices].max() <= b.length
        assert b.rows * b.length <= max(budget, multiple_of * b.length) and b.rows <= max(batch_size, multiple_of)


@pytest.mark.parametrize("seed", range(40))
def test_plan_lockstep_gives_every_process_the_same_shapes_and_each_its_texts_once(seed):
    rng = np.random.default_rng(seed)
    buckets, _, _, _, _ = _setting(rng)
    processes = int(rng.integers(1, 5))
    per_process = [
        [np.zeros(int(n), np.int32) for n in rng.integers(2, buckets[-1] + 1, size=int(rng.integers(0, 120)))]
        for _ in range(processes)
    ]
    counts = np.stack([batching.bucket_counts(t, buckets) for t in per_process])
    assert counts.sum(axis=1).tolist() == [len(t) for t in per_process]
    rows_per_length = {b: int(rng.integers(1, 40)) for b in buckets}
    plans = [
        batching.plan_lockstep(t, buckets, most_per_bucket=counts.max(axis=0), rows=rows_per_length.__getitem__)
        for t in per_process
    ]
    assert len({tuple((b.rows, b.length) for b in plan) for plan in plans}) == 1  # lockstep
    for tokens, plan in zip(per_process, plans, strict=True):
        planned = np.concatenate([b.indices for b in plan]) if plan else np.array([], dtype=np.int64)
        assert sorted(planned.tolist()) == list(range(len(tokens)))
        for b in plan:
            assert b.rows == rows_per_length[b.length] and len(b.indices) <= b.rows
            assert all(len(tokens[i]) <= b.length for i in b.indices)


def test_plan_respects_token_budget_and_restores_order():
    lengths = np.array([5, 500, 17, 120, 512, 3, 64, 64, 300])
    batches = batching.plan_batches(
        lengths, buckets=batching.length_buckets(512), batch_size=4, max_batch_tokens=1024, multiple_of=2
    )
    seen = np.concatenate([b.indices for b in batches])
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert b.rows * b.length <= max(1024, 2 * b.length) and b.rows % 2 == 0
        assert lengths[b.indices].max() <= b.length and len(b.indices) <= b.rows


def test_small_calls_pad_to_few_lengths_bulk_calls_to_fine_ones():
    buckets = batching.length_buckets(512)
    kw = dict(buckets=buckets, batch_size=64, max_batch_tokens=1024)
    (query,) = batching.plan_batches(np.array([5]), **kw)
    assert (query.rows, query.length) == (1, 16)  # a small-call length, the smallest row bucket
    bulk = batching.plan_batches(np.array([5] * 100 + [11] * 100), **kw)
    assert {b.length for b in bulk} == {8, 12} and {b.rows for b in bulk} == {64}
    # Row buckets only at the small-call lengths: few programs despite 27 length buckets.
    shapes = batching.all_shapes(buckets, batch_size=64, max_batch_tokens=1024)
    assert len(buckets) == 27 and len(shapes) == 48


def test_a_call_that_fits_one_full_step_of_its_longest_bucket_runs_as_one_step():
    # 4 x 38, 8 x 20 and 8 x 10 tokens with the CPU defaults: too many rows for a small call at 64 tokens (16),
    # few enough for one full step at 40 (25 rows); per bucket they took three steps, 2,788 padded tokens.
    buckets = batching.length_buckets(256)
    (step,) = batching.plan_batches(
        np.array([38] * 4 + [20] * 8 + [10] * 8), buckets=buckets, batch_size=64, max_batch_tokens=1024
    )
    assert (step.rows, step.length) == (25, 40) and sorted(step.indices.tolist()) == list(range(20))
    assert (25, 40) in batching.all_shapes(buckets, batch_size=64, max_batch_tokens=1024)  # no new program


def test_long_context_models_pad_past_512_by_at_most_a_quarter():
    # An 8,192-token model once padded every text over 512 tokens to 8,192 (a 600-token query: 14x the tokens).
    buckets = batching.length_buckets(8192)
    small = batching.small_call_buckets(buckets)
    for n in range(513, 8193):
        assert batching.bucket_for(n, buckets) <= 1.25 * n
        assert batching.bucket_for(n, small) <= 2 * n
    assert batching.length_buckets(512)[-1] == 512 and batching.length_buckets(1000)[-2:] == (896, 1000)
