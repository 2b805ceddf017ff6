"""Every attention kernel gives the einsum reference's numbers, alone and inside the full model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gte_jax import GTEEncoder
from gte_jax.attention import ATTENTION_IMPLS, attention, default_impl

N, H = 12, 32


def _inputs(batch: int, tokens: int, seed: int = 0, dtype=jnp.float32):
    """Random q, k, v ``[B, T, N, H]`` and a right-padded mask with varied lengths: full, one token, none."""
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal((batch, tokens, N, H)), dtype) for _ in range(3))
    lengths = rng.integers(1, tokens + 1, size=batch)
    lengths[:3] = (tokens, 1, 0)  # the last: a fully padded row, as in a padded-out batch
    mask = jnp.asarray(np.arange(tokens)[None, :] < lengths[:, None], jnp.int32)
    return q, k, v, mask


HAS_GPU = jax.default_backend() == "gpu"
# The "gpu" kernel runs the einsum itself off a GPU: its comparisons only mean something on one.
IMPLS = [pytest.param(impl, marks=pytest.mark.gpu) if impl == "gpu" else impl for impl in ATTENTION_IMPLS]


@functools.cache
def _jitted(impl: str):
    return jax.jit(functools.partial(attention, impl=impl))


@pytest.mark.parametrize("tokens", [16, 128])  # both sides of the "cpu" kernel's switch
@pytest.mark.parametrize("impl", IMPLS)
def test_float32_matches_einsum(impl, tokens):
    q, k, v, mask = _inputs(5, tokens)
    ref = np.asarray(_jitted("einsum")(q, k, v, mask))
    out = _jitted(impl)(q, k, v, mask)
    assert out.shape == q.shape and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all(), f"{impl}: non-finite output (the fully padded row?)"
    assert np.abs(np.asarray(out) - ref).max() <= 1e-6, impl


@pytest.mark.parametrize("impl", IMPLS)
def test_fully_padded_row_is_a_uniform_average(impl):
    q, k, v, mask = _inputs(4, 16)
    out = np.asarray(_jitted(impl)(q, k, v, mask))[2]  # row 2 has no real tokens
    np.testing.assert_allclose(out, np.broadcast_to(np.asarray(v[2]).mean(0), out.shape), atol=1e-6)


@pytest.mark.parametrize("tokens", [16, 128])
@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_stays_bfloat16_and_near_float32(impl, tokens):
    q, k, v, mask = _inputs(5, tokens)
    ref = np.asarray(_jitted("einsum")(q, k, v, mask))
    out = _jitted(impl)(*(x.astype(jnp.bfloat16) for x in (q, k, v)), mask)
    assert out.dtype == jnp.bfloat16
    out = np.asarray(out.astype(jnp.float32))
    assert np.isfinite(out).all()
    assert np.abs(out - ref).max() <= 0.05, impl  # bf16 inputs: ~3 significant digits


def test_unknown_impl_names_the_choices():
    q, k, v, mask = _inputs(3, 4)
    with pytest.raises(ValueError, match="einsum"):
        attention(q, k, v, mask, impl="flash")


def test_default_impl_per_backend():
    assert default_impl("cpu") == "cpu"
    assert default_impl("gpu") == "gpu"
    assert default_impl("tpu") == "einsum"
    assert default_impl() == ("gpu" if HAS_GPU else "cpu")  # these tests run on CPU or a GPU


@pytest.mark.skipif(HAS_GPU, reason="checks the fallback off a GPU")
def test_gpu_kernel_off_a_gpu_says_it_runs_the_einsum():
    q, k, v, mask = (x.astype(jnp.bfloat16) if x.dtype == jnp.float32 else x for x in _inputs(3, 8, seed=3))
    with pytest.warns(UserWarning, match="running the einsum kernel instead"):
        out = jax.jit(functools.partial(attention, impl="gpu"))(q, k, v, mask)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(_jitted("einsum")(q, k, v, mask)))


# Lengths from a couple of tokens to past 128 (MiniLM truncates at 256), so the model
# runs both the short (per-row) and the long (per-head) CPU kernels.
_TEXTS = [
    "",
    "hi",
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog, then naps in the afternoon sun.",
    " ".join(f"Sentence {i} talks about tensors, kernels and attention heads." for i in range(15)),
    " ".join(f"word{i}" for i in range(400)),
]


@pytest.fixture(scope="module")
def einsum_embeddings(minilm_dir):
    return GTEEncoder.from_pretrained(minilm_dir, attention_impl="einsum").encode(_TEXTS)


@pytest.mark.slow
@pytest.mark.parametrize("impl", [i for i in ATTENTION_IMPLS if i != "einsum"])
def test_model_embeddings_match_einsum(minilm_dir, einsum_embeddings, impl):
    out = GTEEncoder.from_pretrained(minilm_dir, attention_impl=impl).encode(_TEXTS)
    assert np.abs(out - einsum_embeddings).max() <= 1e-6, impl
