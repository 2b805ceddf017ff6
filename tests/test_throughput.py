"""The batching engine: bounded compiles and warm-up."""

from __future__ import annotations

import numpy as np
import pytest

from gte_jax import GTEEncoder
from gte_jax.engine import batching

from compiles import CompileCounter

WORDS = "the model embeds passages queries and documents for retrieval across many topics quickly".split()


def _random_texts(rng, n):
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 701))) for _ in range(n)]


@pytest.mark.slow
def test_second_pass_compiles_nothing(tiny_dir):
    # A tiny model: compile counts do not depend on width, and 2 x 1,500 long texts stay quick.
    enc = GTEEncoder.from_pretrained(tiny_dir, max_length=512, max_batch_tokens=8192)
    rng = np.random.default_rng(0)
    buckets = batching.length_buckets(512)
    with CompileCounter() as first:
        enc.encode(_random_texts(rng, 1500))
    with CompileCounter() as second:
        enc.encode(_random_texts(rng, 1500))
    print(f"compiles: first pass {first.count}, second pass {second.count}, length buckets {len(buckets)}")
    assert 0 < first.count <= len(buckets)  # one program per length bucket
    assert second.count == 0


@pytest.mark.slow
def test_warmup_compiles_every_shape_up_front(minilm_dir):
    enc = GTEEncoder.from_pretrained(minilm_dir, max_length=64, batch_size=8)
    with CompileCounter() as warm:
        n = enc.warmup()
    with CompileCounter() as after:
        enc.encode(["short", "a little longer text " * 5, "x " * 100] * 5)
    assert warm.count >= n > 0 and after.count == 0
