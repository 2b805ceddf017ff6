"""Every attention kernel gives the einsum reference's numbers, alone and inside the full model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gte_jax import GTEEncoder
from gte_jax.kernels.attention import ATTENTION_IMPLS, attention, chunked_attention, default_impl, einsum_attention

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
    assert default_impl("tpu") == "tpu"
    assert default_impl("metal") == "chunked"
    assert default_impl() == ("gpu" if HAS_GPU else "cpu")  # these tests run on CPU or a GPU


@pytest.mark.skipif(HAS_GPU, reason="checks the fallback off a GPU")
def test_gpu_kernel_off_a_gpu_says_it_runs_the_einsum():
    q, k, v, mask = (x.astype(jnp.bfloat16) if x.dtype == jnp.float32 else x for x in _inputs(3, 8, seed=3))
    with pytest.warns(UserWarning, match="running the XLA kernels instead"):
        out = jax.jit(functools.partial(attention, impl="gpu"))(q, k, v, mask)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(_jitted("einsum")(q, k, v, mask)))


def _band_reference(q, k, v, mask, window):
    """The reference with the window as a dense ``[B, 1, T, S]`` mask: ``|i - j| <= window // 2``, and padding."""
    T = q.shape[1]
    band = np.abs(np.arange(T)[None, :] - np.arange(T)[:, None]) <= window // 2
    full = jnp.asarray(np.asarray(mask, bool)[:, None, None, :] & band[None, None])
    return np.asarray(einsum_attention(q, k, v, full))


# Windows narrower than the input (the query ends see less), odd, and wider than it (plain attention).
@pytest.mark.parametrize("window", [4, 7, 16, 300])
@pytest.mark.parametrize("tokens", [16, 130])
@pytest.mark.parametrize("impl", IMPLS)
def test_windowed_float32_matches_the_band_reference(impl, tokens, window):
    q, k, v, mask = _inputs(5, tokens, seed=4)
    ref = _band_reference(q, k, v, mask, window)
    out = np.asarray(jax.jit(functools.partial(attention, impl=impl, window=window))(q, k, v, mask))
    assert np.isfinite(out).all()
    assert np.abs(out - ref).max() <= 1e-6, (impl, window)


# Small blocks so that the scan crosses many key blocks, skips the ones a window cannot reach, pads the last
# block, and meets rows whose window holds padding only (row 1: one real token; row 2: none).
@pytest.mark.parametrize("window", [None, 2, 9, 24])
@pytest.mark.parametrize("block", [8, 32])
def test_chunked_blocks_match_the_reference(block, window):
    q, k, v, mask = _inputs(5, 100, seed=5)
    ref = np.asarray(einsum_attention(q, k, v, mask)) if window is None else _band_reference(q, k, v, mask, window)
    out = np.asarray(jax.jit(functools.partial(chunked_attention, block=block, window=window))(q, k, v, mask))
    assert np.abs(out - ref).max() <= 1e-6, (block, window)


@pytest.mark.parametrize("window", [None, 10])
def test_chunked_gradients_match_the_reference(window):
    """ModernBERT trains without attention dropout, so training runs the chunked kernel: its gradients too."""
    q, k, v, mask = _inputs(4, 40, seed=6)

    def loss(kernel):
        return lambda q, k, v: (kernel(q, k, v) ** 2).sum()

    if window is None:
        ref_fn = functools.partial(einsum_attention, mask=mask)
    else:
        band = np.abs(np.arange(40)[None, :] - np.arange(40)[:, None]) <= window // 2
        ref_fn = functools.partial(einsum_attention, mask=jnp.asarray(np.asarray(mask, bool)[:, None, None] & band))
    got = jax.grad(loss(functools.partial(chunked_attention, mask=mask, block=8, window=window)), (0, 1, 2))(q, k, v)
    want = jax.grad(loss(ref_fn), (0, 1, 2))(q, k, v)
    for name, g, w in zip("qkv", got, want, strict=True):
        scale = float(np.abs(np.asarray(w)).max())  # sums over keys and heads: float32 rounding of ~1e-6 relative
        assert np.abs(np.asarray(g) - np.asarray(w)).max() <= 1e-5 * max(scale, 1.0), name


@pytest.mark.parametrize("window", [None, 16])
def test_splash_in_interpret_mode_matches_the_reference(window):
    """The TPU kernel, run by Pallas' interpreter on this backend: 200 tokens pad to two 128-token blocks."""
    from gte_jax.kernels.attention import splash_attention

    # 2 heads (the interpreter is slow) of 64, gte-modernbert-base's: pre-scaling q by 1/8 is exact
    q, k, v, mask = _inputs(4, 200, seed=7)
    q, k, v = (jnp.concatenate([x[:, :, :2], x[:, :, 2:4]], axis=-1) for x in (q, k, v))
    ref = np.asarray(einsum_attention(q, k, v, mask)) if window is None else _band_reference(q, k, v, mask, window)
    out = np.asarray(splash_attention(q, k, v, mask, window=window, interpret=True))
    assert np.abs(out - ref).max() <= 1e-6, window


@pytest.mark.parametrize("window", [None, 6, 17])
@pytest.mark.parametrize("suffix", [True, False])
def test_fused_path_arguments_give_the_reference(window, suffix):
    """What the "gpu" kernel hands cuDNN (key lengths or a dense mask, local_window_size, keyless rows filled in),
    run through jax.nn.dot_product_attention's XLA implementation here: cuDNN itself needs a GPU."""
    from gte_jax.kernels.attention import _fused_attention

    q, k, v, mask = _inputs(5, 40, seed=3)
    if not suffix:
        mask = mask.at[0, 5].set(0)  # a hole: not a suffix, so the dense-mask branch
    ref = np.asarray(einsum_attention(q, k, v, mask)) if window is None else _band_reference(q, k, v, mask, window)
    out = np.asarray(jax.jit(functools.partial(_fused_attention, window=window, implementation="xla"))(q, k, v, mask))
    assert np.abs(out - ref).max() <= 1e-6, (window, suffix)


_RSS_SCRIPT = """
import resource, sys
import jax, jax.numpy as jnp
from gte_jax.kernels.attention import attention
T, impl = int(sys.argv[1]), sys.argv[2]
x = jnp.ones((1, 8, 12, 64), jnp.float32)
jax.block_until_ready(jax.jit(lambda a: attention(a, a, a, jnp.ones((1, 8)), impl="einsum"))(x))  # warm the runtime
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
key = jax.random.split(jax.random.key(0), 3)
q, k, v = (jax.random.normal(kk, (1, T, 12, 64), jnp.float32) for kk in key)
mask = jnp.ones((1, T), jnp.int32).at[:, T - 100 :].set(0)
jax.block_until_ready(jax.jit(lambda q, k, v, m: attention(q, k, v, m, impl=impl))(q, k, v, mask))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def _peak_growth_kib(tokens: int, impl: str) -> int:
    """Peak RSS (KiB) a fresh process adds to run ``impl`` once at ``tokens`` (12 heads of 64, gte-modernbert-base)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(tokens), impl], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@pytest.mark.slow
def test_cpu_kernel_memory_grows_linearly_to_8192_tokens():
    """What 8,192 tokens add over 2,048 stays within twice the extra q, k, v and output buffers (linear), where one
    head's [8192, 8192] float32 scores alone are 256 MiB (the old per-head kernel: +347 MiB; chunked: +100 MiB)."""
    short, long = _peak_growth_kib(2048, "cpu"), _peak_growth_kib(8192, "cpu")
    buffers_kib = 4 * (8192 - 2048) * 12 * 64 * 4 // 1024  # q, k, v, output: 72 MiB more at 8,192 tokens
    assert long - short < 2 * buffers_kib, f"peak RSS growth {short} KiB at 2,048 tokens, {long} KiB at 8,192"


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
