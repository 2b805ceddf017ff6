"""The attention kernels XLA lowers on every backend, and what they share.

Every kernel takes the same arguments and gives the same numbers (within
float rounding: 1e-6 in float32, fully padded rows included); they differ in
how XLA lowers them on each backend. Shapes: B=batch, T=query tokens,
S=key tokens, N=heads, H=head_dim.

In training, BERT's dropout on the attention probabilities is drawn once for
the whole ``[B, N, T, S]`` probability tensor (:class:`ProbsDropout`) and
handed to the kernel, so every kernel drops the same entries for a given key.

Why more than one: on XLA:CPU the layout decides the speed. Textbook attention's
batched dots (``BTNH,BSNH->BNTS``) are slow; the same dots on q, k, v transposed
heads-first (``BNTH``) are fastest up to a few hundred tokens, and beyond that,
where the ``[B, N, T, S]`` scores outgrow the caches, a ``lax.map`` over (batch,
head) pairs of 2-D matmuls is; ``bench/attention_cpu.py`` measures the choices.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax.lax import PrecisionLike

# The most negative float instead of -inf: a fully padded row stays finite (a uniform average).
_NEG = jnp.finfo(jnp.float32).min

# From this many tokens on, the "cpu" kernel loops over (batch, head) pairs; below it the batched
# dots of heads_first_attention are faster (bench/attention_cpu.py). With CPU steps of ~1,024 tokens
# its [B, N, T, S] scores grow with T (16 MB at 320 tokens, 12 heads) and stop fitting the caches.
_CPU_HEADS_FROM_TOKENS = 320

# From this many tokens on, the "cpu", "gpu" (float32) and "tpu" (float32) kernels run chunked_attention, whose
# memory is linear in the length; below it their quadratic kernels are faster (bench/attention_cpu.py).
_LONG_FROM_TOKENS = 2048
# chunked_attention's query and key block: one [B, N, 512, 512] float32 score block (12 MB at 12 heads). Windowed
# layers take blocks near the window's size (128 for ModernBERT's 128 tokens: at 8,192 tokens, 12 heads of 64,
# 2 shared cores, 0.3-0.5 s a layer against 1.1 s with 512-token blocks and 7.7 s for global attention).
_BLOCK = 512


class ProbsDropout(NamedTuple):
    """Dropout on the attention probabilities: entries where ``keep`` ([B, N, T, S] bool) is false are zeroed,
    the others scaled by ``1 / (1 - rate)``, as ``torch.nn.Dropout`` does in BERT."""

    keep: jax.Array
    rate: float


class Kernel(Protocol):
    """What every kernel is: ``(q, k, v, mask, *, precision, dropout) -> out``, shapes as in the module docstring."""

    def __call__(
        self,
        q: jax.Array,
        k: jax.Array,
        v: jax.Array,
        mask: jax.Array,
        *,
        precision: PrecisionLike = None,
        dropout: ProbsDropout | None = None,
    ) -> jax.Array: ...


def _scale(q: jax.Array) -> jax.Array:
    return 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))


def _masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """float32 softmax over the last axis; ``mask`` (true = keep) broadcasts against ``scores``."""
    return jax.nn.softmax(jnp.where(mask.astype(bool), scores, _NEG), axis=-1)


def _drop(probs: jax.Array, keep: jax.Array | None, rate: float) -> jax.Array:
    """float32 ``probs`` with dropout applied where ``keep`` is given (else unchanged: eval mode)."""
    if keep is None:
        return probs
    return jnp.where(keep, probs / (1.0 - rate), 0.0)


def einsum_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
) -> jax.Array:
    """Reference attention: einsums with a float32 softmax.

    Args:
        q, k, v: ``[batch, tokens, heads, head_dim]``.
        mask: ``[batch, tokens]``, true (or 1) for real key tokens (or ``[batch, 1, tokens, tokens]``).
        precision: passed to every matmul (``HIGHEST`` for float32 parity on TPU and GPU).
        dropout: train mode only: which probabilities to drop.

    Returns:
        ``[batch, tokens, heads, head_dim]`` in ``q``'s dtype.
    """
    scores = jnp.einsum("BTNH,BSNH->BNTS", q, k, precision=precision, preferred_element_type=jnp.float32)
    full = mask if mask.ndim == 4 else mask[:, None, None, :]  # a [B, 1, T, S] mask from attention(window=)
    probs = _masked_softmax(scores * _scale(q), full)  # [B, N, T, S]
    if dropout is not None:
        probs = _drop(probs, dropout.keep, dropout.rate)
    probs = probs.astype(v.dtype)
    return jnp.einsum("BNTS,BSNH->BTNH", probs, v, precision=precision).astype(q.dtype)


def heads_first_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
) -> jax.Array:
    """:func:`einsum_attention` with q, k, v transposed to ``[B, N, T, H]`` first, so that both batched
    dots have the canonical (batch, rows, contraction) layout: same numbers.

    Fastest on XLA:CPU (jax 0.10, YNNPACK dots) below ~320 tokens: 10-30% faster than :func:`map_batch_attention`
    and :func:`map_heads_attention`.
    """
    qh, kh, vh = (jnp.transpose(x, (0, 2, 1, 3)) for x in (q, k, v))  # [B, N, T, H]
    scores = jnp.einsum("BNTH,BNSH->BNTS", qh, kh, precision=precision, preferred_element_type=jnp.float32)
    probs = _masked_softmax(scores * _scale(q), mask[:, None, None, :])  # [B, N, T, S]
    probs = _drop(probs, dropout.keep if dropout is not None else None, dropout.rate if dropout else 0.0)
    out = jnp.einsum("BNTS,BNSH->BNTH", probs.astype(v.dtype), vh, precision=precision)
    return jnp.transpose(out, (0, 2, 1, 3)).astype(q.dtype)  # [B, T, N, H]


def map_batch_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
) -> jax.Array:
    """``lax.map`` over batch rows, each a head-batched einsum: same numbers as :func:`einsum_attention`.

    Was the CPU kernel below 128 tokens before jax 0.10's YNNPACK dots made :func:`heads_first_attention` faster.
    """

    rate = dropout.rate if dropout is not None else 0.0

    def row(args: tuple[jax.Array, ...]) -> jax.Array:
        qb, kb, vb, mb, *keep = args  # [T, N, H] x3, [S], maybe [N, T, S]
        scores = jnp.einsum("TNH,SNH->NTS", qb, kb, precision=precision, preferred_element_type=jnp.float32)
        probs = _masked_softmax(scores * _scale(q), mb[None, None, :])  # [N, T, S]
        probs = _drop(probs, keep[0] if keep else None, rate).astype(vb.dtype)
        return jnp.einsum("NTS,SNH->TNH", probs, vb, precision=precision)

    xs = (q, k, v, mask) + ((dropout.keep,) if dropout is not None else ())
    return jax.lax.map(row, xs).astype(q.dtype)  # [B, T, N, H]


def map_heads_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
) -> jax.Array:
    """``lax.map`` over (batch, head) pairs, each two 2-D matmuls (XLA:CPU's fast path).

    3-4x faster than :func:`einsum_attention` on XLA:CPU from 128 tokens on; the CPU kernel from 320.
    """
    B, T, N, H = q.shape
    S = k.shape[1]

    def heads_first(x: jax.Array) -> jax.Array:  # [B, T, N, H] -> [B*N, T, H]
        return jnp.transpose(x, (0, 2, 1, 3)).reshape(B * N, x.shape[1], H)

    rate = dropout.rate if dropout is not None else 0.0

    def head(args: tuple[jax.Array, ...]) -> jax.Array:
        qh, kh, vh, mh, *keep = args  # [T, H], [S, H], [S, H], [S], maybe [T, S]
        scores = jnp.dot(qh, kh.T, precision=precision, preferred_element_type=jnp.float32)  # [T, S]
        probs = _masked_softmax(scores * _scale(q), mh[None, :])
        probs = _drop(probs, keep[0] if keep else None, rate).astype(vh.dtype)
        return jnp.dot(probs, vh, precision=precision)  # [T, H]

    masks = jnp.broadcast_to(mask[:, None, :], (B, N, S)).reshape(B * N, S)
    xs: tuple[jax.Array, ...] = (heads_first(q), heads_first(k), heads_first(v), masks)
    if dropout is not None:
        xs += (dropout.keep.reshape(B * N, T, S),)
    out = jax.lax.map(head, xs)  # [B*N, T, H]
    return jnp.transpose(out.reshape(B, N, T, H), (0, 2, 1, 3)).astype(q.dtype)


def _band(T: int, S: int, window: int) -> jax.Array:
    """``[T, S]``: true where key ``j`` is within ``window // 2`` positions of query ``i``."""
    return jnp.abs(jnp.arange(S)[None, :] - jnp.arange(T)[:, None]) <= window // 2


def _windowed_reference(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    window: int,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
) -> jax.Array:
    """:func:`einsum_attention` with a dense ``[B, 1, T, S]`` band mask: what every windowed kernel must equal."""
    full = mask.astype(bool)[:, None, None, :] & _band(q.shape[1], k.shape[1], window)[None, None]
    return einsum_attention(q, k, v, full, precision=precision, dropout=dropout)


def _keyless_rows(mask: jax.Array, T: int, window: int | None) -> jax.Array:
    """``[B, T]``: the queries with no key to attend (a fully padded row, or a window over padding only).

    The reference gives such a row the uniform average of all ``S`` values (its scores are all the
    same finite minimum); kernels that skip masked blocks compute it apart. Prefix sums keep this linear.
    """
    S = mask.shape[1]
    counts = jnp.concatenate([jnp.zeros_like(mask[:, :1], jnp.int32), jnp.cumsum(mask.astype(jnp.int32), -1)], -1)
    if window is None:
        return jnp.broadcast_to(counts[:, -1:] == 0, (mask.shape[0], T))
    i = jnp.arange(T)
    lo, hi = jnp.clip(i - window // 2, 0, S), jnp.clip(i + window // 2 + 1, 0, S)
    return (counts[:, hi] - counts[:, lo]) == 0


def _fill_keyless_rows(out: jax.Array, v: jax.Array, mask: jax.Array, window: int | None) -> jax.Array:
    """``out`` ``[B, T, N, H]`` with its keyless rows set to the mean of ``v`` over all keys (the reference's)."""
    empty = _keyless_rows(mask, out.shape[1], window)[:, :, None, None]
    mean = jnp.mean(v.astype(jnp.float32), axis=1, keepdims=True)  # [B, 1, N, H]
    return jnp.where(empty, mean.astype(out.dtype), out)


def chunked_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
    window: int | None = None,
    block: int | None = None,
) -> jax.Array:
    """Flash-style attention in plain XLA: memory linear in the length, same numbers as :func:`einsum_attention`.

    A ``lax.map`` over query blocks, each a ``lax.scan`` over key blocks keeping float32 running
    maxima and sums (online softmax), so no ``[B, N, T, S]`` tensor exists: the largest is one
    ``[B, N, block, block]`` score block. With ``window`` a query block visits only the key blocks
    its band reaches (``window / block + 2`` of them, not ``S / block``). Each query block is
    rematerialised in the backward pass, so gradients stay linear in the length too.

    Dropout (training) runs the reference: its keep mask is ``[B, N, T, S]`` already.
    """
    if dropout is not None:
        if window is None:
            return einsum_attention(q, k, v, mask, precision=precision, dropout=dropout)
        return _windowed_reference(q, k, v, mask, window, precision=precision, dropout=dropout)
    B, T, N, H = q.shape
    S = k.shape[1]
    if block is None:  # windows: blocks about the window's size, so that few keys outside it are computed
        block = _BLOCK if window is None else min(_BLOCK, max(128, 1 << (window - 1).bit_length()))
    bq, bk = min(block, T), min(block, S)
    nq, nk = -(-T // bq), -(-S // bk)

    def blocks(x: jax.Array, n: int, b: int) -> jax.Array:  # [B, L, N, H] -> [n, B, N, b, H], zero-padded
        x = jnp.pad(x, ((0, 0), (0, n * b - x.shape[1]), (0, 0), (0, 0)))
        return jnp.transpose(x.reshape(B, n, b, N, H), (1, 0, 3, 2, 4))

    qb, kb, vb = blocks(q, nq, bq), blocks(k, nk, bk), blocks(v, nk, bk)
    mb = jnp.pad(mask.astype(bool), ((0, 0), (0, nk * bk - S))).reshape(B, nk, bk).transpose(1, 0, 2)  # [nk, B, bk]
    half = None if window is None else window // 2
    span = nk if half is None else min(nk, (bq + 2 * half - 1) // bk + 2)  # key blocks one query block can reach
    scale = _scale(q)

    def query_block(args: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        i, qi = args  # block index, [B, N, bq, H]
        first = 0 if half is None or span == nk else jnp.clip((i * bq - half) // bk, 0, nk - span)
        q_pos = i * bq + jnp.arange(bq)

        def key_block(
            carry: tuple[jax.Array, jax.Array, jax.Array], j: jax.Array
        ) -> tuple[tuple[jax.Array, jax.Array, jax.Array], None]:
            m, total, acc = carry  # running max [B, N, bq], sum [B, N, bq], output [B, N, bq, H]
            kj, vj, mj = (jax.lax.dynamic_index_in_dim(x, first + j, keepdims=False) for x in (kb, vb, mb))
            s = jnp.einsum("BNTH,BNSH->BNTS", qi, kj, precision=precision, preferred_element_type=jnp.float32)
            valid = mj[:, None, None, :]  # [B, 1, 1, bk]
            if half is not None:
                k_pos = (first + j) * bk + jnp.arange(bk)
                valid = valid & (jnp.abs(q_pos[:, None] - k_pos[None, :]) <= half)[None, None]
            s = jnp.where(valid, s * scale, -jnp.inf)
            # The running max is only a shift, which cancels in acc / total: no gradient flows through it.
            m_new = jax.lax.stop_gradient(jnp.maximum(m, s.max(-1)))
            shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # 0 while a row has seen no key
            p = jnp.exp(s - shift[..., None])
            correction = jnp.exp(m - shift)
            pv = jnp.einsum(
                "BNTS,BNSH->BNTH", p.astype(v.dtype), vj, precision=precision, preferred_element_type=jnp.float32
            )
            return (m_new, total * correction + p.sum(-1), acc * correction[..., None] + pv), None

        init = (
            jnp.full((B, N, bq), -jnp.inf, jnp.float32),
            jnp.zeros((B, N, bq), jnp.float32),
            jnp.zeros((B, N, bq, H), jnp.float32),
        )
        (_, total, acc), _ = jax.lax.scan(key_block, init, jnp.arange(span))
        return acc, total

    acc, total = jax.lax.map(jax.checkpoint(query_block), (jnp.arange(nq), qb))  # [nq, B, N, bq, H], [nq, B, N, bq]
    out = acc / jnp.where(total > 0, total, 1.0)[..., None]
    out = jnp.transpose(out, (1, 0, 3, 2, 4)).reshape(B, nq * bq, N, H)[:, :T]  # [B, T, N, H]
    return _fill_keyless_rows(out, v, mask, window).astype(q.dtype)


def cpu_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
    window: int | None = None,
) -> jax.Array:
    """The fastest XLA:CPU kernel for the (static) sequence length: heads first below 320 tokens, a loop over
    (batch, head) pairs from 320, and :func:`chunked_attention` (linear memory) for long inputs and windows."""
    if q.shape[1] >= _LONG_FROM_TOKENS or window is not None:
        return chunked_attention(q, k, v, mask, precision=precision, dropout=dropout, window=window)
    fn = map_heads_attention if q.shape[1] >= _CPU_HEADS_FROM_TOKENS else heads_first_attention
    return fn(q, k, v, mask, precision=precision, dropout=dropout)
