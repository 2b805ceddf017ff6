"""Attention through the accelerators' fused kernels: cuDNN on NVIDIA GPUs (``jax.nn.dot_product_attention``
with key lengths and a local window) and splash attention on TPUs (Pallas), falling back to the XLA kernels of
:mod:`gte_jax.kernels.xla` where a kernel cannot take a shape or dtype (with a warning, once)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from jax.lax import PrecisionLike

from gte_jax.kernels.xla import (
    _LONG_FROM_TOKENS,
    ProbsDropout,
    _fill_keyless_rows,
    _scale,
    chunked_attention,
    einsum_attention,
)

# splash_attention pads the tokens to a multiple of its smallest block.
_SPLASH_ALIGN = 128


def _fused_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    window: int | None,
    implementation: Literal["xla", "cudnn"] = "cudnn",
) -> jax.Array:
    """``jax.nn.dot_product_attention`` (cuDNN's fused kernel): key lengths instead of a dense mask where the
    padding is a suffix (the tokenizer's), a ``[B, 1, T, S]`` mask otherwise; keyless rows filled as the
    reference has them. ``implementation="xla"`` runs the same arguments anywhere (tests)."""
    B, T = q.shape[:2]
    S = k.shape[1]
    keep = mask.astype(bool)
    lengths = keep.sum(-1).astype(jnp.int32)
    local = None if window is None else (window // 2, window // 2)

    def by_lengths() -> jax.Array:  # every query row is computed, padded ones too, as in the reference
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            query_seq_lengths=jnp.full((B,), T, jnp.int32),
            key_value_seq_lengths=lengths,
            local_window_size=local,
            implementation=implementation,
        )

    def by_mask() -> jax.Array:
        full = jnp.broadcast_to(keep[:, None, None, :], (B, 1, T, S))
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            mask=full,
            local_window_size=local,
            implementation=implementation,
        )

    is_suffix = jnp.all(keep == (jnp.arange(S)[None, :] < lengths[:, None]))
    return _fill_keyless_rows(jax.lax.cond(is_suffix, by_lengths, by_mask), v, mask, window)


def gpu_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
    window: int | None = None,
) -> jax.Array:
    """cuDNN fused attention for bf16/fp16 where it is available, else :func:`chunked_attention` for long
    inputs and windows and :func:`einsum_attention` for short ones.

    float32 keeps XLA: ``jax.nn.dot_product_attention`` takes no ``precision`` and would run
    float32 matmuls as TF32 on recent NVIDIA GPUs. cuDNN gets the padding as key lengths where
    it is a suffix (no ``[B, 1, T, S]`` mask), the window as ``local_window_size``, and padded
    query rows are computed as the reference computes them. Dropout (training) also keeps XLA:
    cuDNN's fused kernel takes no dropout mask of ours.
    """
    if dropout is None and q.dtype in (jnp.bfloat16, jnp.float16):
        try:
            return _fused_attention(q, k, v, mask, window)
        except (NotImplementedError, RuntimeError, ValueError) as e:  # no cuDNN (CPU, TPU, ROCm), or a shape
            _warn_fallback("gpu", f"cuDNN attention is unavailable for {q.dtype} {tuple(q.shape)} ({e})")
    return _xla_attention(q, k, v, mask, precision=precision, dropout=dropout, window=window)


def _xla_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
    window: int | None = None,
) -> jax.Array:
    """The accelerators' XLA path: :func:`chunked_attention` for long inputs and windows, else the einsum."""
    if q.shape[1] >= _LONG_FROM_TOKENS or window is not None:
        return chunked_attention(q, k, v, mask, precision=precision, dropout=dropout, window=window)
    return einsum_attention(q, k, v, mask, precision=precision, dropout=dropout)


def splash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, window: int | None = None, interpret: bool = False
) -> jax.Array:
    """Splash attention (the TPU Pallas kernel): the band as a ``LocalMask``, whose blocks outside it are skipped,
    and the padding as segment ids, so no ``[B, N, T, S]`` mask exists. Same numbers as the reference (keyless
    rows included). ``interpret=True`` runs the kernel in Pallas' interpreter (any backend; tests)."""
    B, T, N, H = q.shape
    S = k.shape[1]
    tp, sp = -(-T // _SPLASH_ALIGN) * _SPLASH_ALIGN, -(-S // _SPLASH_ALIGN) * _SPLASH_ALIGN
    kernel = _splash_kernel(tp, sp, N, None if window is None else window // 2, interpret)
    qh = jnp.transpose(jnp.pad(q * _scale(q).astype(q.dtype), ((0, 0), (0, tp - T), (0, 0), (0, 0))), (0, 2, 1, 3))
    kh, vh = (jnp.transpose(jnp.pad(x, ((0, 0), (0, sp - S), (0, 0), (0, 0))), (0, 2, 1, 3)) for x in (k, v))
    segments = jnp.pad(mask.astype(jnp.int32), ((0, 0), (0, sp - S)))  # 1 real key, 0 padding; every query is 1
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash

    def one(qx: jax.Array, kx: jax.Array, vx: jax.Array, seg: jax.Array) -> jax.Array:  # [N, T, H] per row
        return kernel(qx, kx, vx, segment_ids=splash.SegmentIds(q=jnp.ones((tp,), jnp.int32), kv=seg))

    out = jnp.transpose(jax.vmap(one)(qh, kh, vh, segments), (0, 2, 1, 3))[:, :T]  # [B, T, N, H]
    return _fill_keyless_rows(out, v, mask, window).astype(q.dtype)


@functools.cache
def _splash_kernel(T: int, S: int, heads: int, half: int | None, interpret: bool) -> Callable[..., jax.Array]:
    """One splash kernel per shape and window (building its block masks is numpy work at trace time)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    one: masks.Mask = masks.FullMask((T, S)) if half is None else masks.LocalMask((T, S), (half, half), offset=0)
    bq, bk = (max(b for b in (512, 256, 128) if n % b == 0) for n in (T, S))
    sizes = splash.BlockSizes(
        block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq, block_kv_dkv=bk, block_kv_dkv_compute=bk,
        block_q_dq=bq, block_kv_dq=bk,
    )  # fmt: skip
    return splash.make_splash_mha(
        masks.MultiHeadMask([one] * heads), block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret
    )


def tpu_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
    window: int | None = None,
) -> jax.Array:
    """:func:`splash_attention` for bf16/fp16 on a TPU, else :func:`chunked_attention` for long inputs and
    windows and :func:`einsum_attention` for short ones.

    float32 keeps XLA, where ``precision`` (``HIGHEST``) holds: the Pallas kernel takes none. Dropout
    (training) keeps XLA too: splash takes no dropout mask of ours.
    """
    if dropout is None and q.dtype in (jnp.bfloat16, jnp.float16):
        if jax.default_backend() == "tpu":
            return splash_attention(q, k, v, mask, window=window)
        _warn_fallback("tpu", f"splash attention runs on TPUs only, not {jax.default_backend()}")
    return _xla_attention(q, k, v, mask, precision=precision, dropout=dropout, window=window)


@functools.cache
def _warn_fallback(impl: str, reason: str) -> None:
    """Says once per reason (at trace time) that a backend's kernel runs XLA's instead."""
    warnings.warn(f"attention_impl {impl!r}: {reason}; running the XLA kernels instead.", stacklevel=3)
