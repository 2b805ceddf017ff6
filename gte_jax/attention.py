"""Scaled dot-product attention kernels, chosen by name.

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

import functools
import warnings
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


def cpu_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
) -> jax.Array:
    """The fastest XLA:CPU kernel for the (static) sequence length: heads first below 320 tokens, a loop over
    (batch, head) pairs from 320."""
    fn = map_heads_attention if q.shape[1] >= _CPU_HEADS_FROM_TOKENS else heads_first_attention
    return fn(q, k, v, mask, precision=precision, dropout=dropout)


def gpu_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    precision: PrecisionLike = None,
    dropout: ProbsDropout | None = None,
) -> jax.Array:
    """cuDNN fused attention for bf16/fp16 where it is available, else :func:`einsum_attention`.

    float32 keeps the einsum: ``jax.nn.dot_product_attention`` takes no ``precision``
    and would run float32 matmuls as TF32 on recent NVIDIA GPUs. The mask is given
    to cuDNN as a ``[B, 1, T, S]`` boolean mask (an additive bias inside), which keeps
    the reference semantics for padded query rows and fully padded rows. Dropout
    (training) also keeps the einsum: cuDNN's fused kernel takes no dropout mask of ours.
    """
    if dropout is None and q.dtype in (jnp.bfloat16, jnp.float16):
        B, T = q.shape[:2]
        S = k.shape[1]
        full_mask = jnp.broadcast_to(mask[:, None, None, :].astype(bool), (B, 1, T, S))
        try:
            return jax.nn.dot_product_attention(q, k, v, mask=full_mask, implementation="cudnn")
        except (NotImplementedError, RuntimeError, ValueError) as e:  # no cuDNN (CPU, TPU, ROCm), or a shape
            _warn_fallback(f"cuDNN attention is unavailable for {q.dtype} {tuple(q.shape)} ({e})")
    return einsum_attention(q, k, v, mask, precision=precision, dropout=dropout)


@functools.cache
def _warn_fallback(reason: str) -> None:
    """Says once per reason (at trace time) that the ``gpu`` kernel runs the einsum instead."""
    warnings.warn(f"attention_impl 'gpu': {reason}; running the einsum kernel instead.", stacklevel=3)


_IMPLS: dict[str, Kernel] = {
    "einsum": einsum_attention,
    "heads_first": heads_first_attention,
    "map_batch": map_batch_attention,
    "map_heads": map_heads_attention,
    "cpu": cpu_attention,
    "gpu": gpu_attention,
}
ATTENTION_IMPLS = tuple(_IMPLS)


def default_impl(backend: str | None = None) -> str:
    """The fastest faithful kernel for a backend (``jax.default_backend()`` when None).

    ``"cpu"`` on CPU (see :func:`cpu_attention`), ``"gpu"`` on CUDA/ROCm GPUs,
    ``"einsum"`` on TPU and anything else.
    """
    backend = backend or jax.default_backend()
    return {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu"}.get(backend, "einsum")


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    impl: str = "einsum",
    precision: PrecisionLike = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    window: int | None = None,
) -> jax.Array:
    """Runs the attention kernel named ``impl`` (one of :data:`ATTENTION_IMPLS`).

    With a PRNG key ``dropout_rng`` and ``dropout_rate > 0`` (train mode), each attention
    probability is dropped with that rate; otherwise the kernel runs exactly as in eval mode.
    With ``window`` (sliding-window layers, ModernBERT's ``local_attention``), the query at
    position ``i`` sees only the keys ``j`` with ``|i - j| <= window // 2``.
    """
    try:
        fn = _IMPLS[impl]
    except KeyError:
        raise ValueError(f"attention impl {impl!r} is not known; use one of {ATTENTION_IMPLS}.") from None
    dropout = None
    if dropout_rng is not None and dropout_rate > 0:
        B, T, N, _ = q.shape
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, (B, N, T, k.shape[1]))  # [B, N, T, S]
        dropout = ProbsDropout(keep, dropout_rate)
    if window is not None:  # a [B, 1, T, S] band mask: the reference kernel, whatever impl was asked for
        T, S = q.shape[1], k.shape[1]
        offsets = jnp.arange(S)[None, :] - jnp.arange(T)[:, None]  # [T, S]
        band = jnp.abs(offsets) <= window // 2
        full = mask.astype(bool)[:, None, None, :] & band[None, None]  # [B, 1, T, S]
        return einsum_attention(q, k, v, full, precision=precision, dropout=dropout)
    if window is not None:  # a [B, 1, T, S] band mask: the reference kernel, whatever impl was asked for
        T, S = q.shape[1], k.shape[1]
        offsets = jnp.arange(S)[None, :] - jnp.arange(T)[:, None]  # [T, S]
        band = jnp.abs(offsets) <= window // 2
        full = mask.astype(bool)[:, None, None, :] & band[None, None]  # [B, 1, T, S]
        return einsum_attention(q, k, v, full, precision=precision, dropout=dropout)
    return fn(q, k, v, mask, precision=precision, dropout=dropout)
