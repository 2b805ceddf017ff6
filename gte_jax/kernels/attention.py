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

import jax
from jax.lax import PrecisionLike

from gte_jax.kernels.accelerators import _fused_attention, gpu_attention, splash_attention, tpu_attention
from gte_jax.kernels.xla import (
    Kernel,
    ProbsDropout,
    _windowed_reference,
    chunked_attention,
    cpu_attention,
    einsum_attention,
    heads_first_attention,
    map_batch_attention,
    map_heads_attention,
)

__all__ = [
    "ATTENTION_IMPLS",
    "ProbsDropout",
    "_fused_attention",
    "attention",
    "chunked_attention",
    "default_impl",
    "einsum_attention",
    "splash_attention",
]

_IMPLS: dict[str, Kernel] = {
    "einsum": einsum_attention,
    "heads_first": heads_first_attention,
    "map_batch": map_batch_attention,
    "map_heads": map_heads_attention,
    "chunked": chunked_attention,
    "cpu": cpu_attention,
    "gpu": gpu_attention,
    "tpu": tpu_attention,
}
ATTENTION_IMPLS = tuple(_IMPLS)
# The kernels that take ``window`` themselves (skipping what lies outside it); the others get a dense band mask.
_WINDOWED = frozenset({"chunked", "cpu", "gpu", "tpu"})


def default_impl(backend: str | None = None) -> str:
    """The fastest faithful kernel for a backend (``jax.default_backend()`` when None).

    ``"cpu"`` on CPU (see :func:`cpu_attention`), ``"gpu"`` on CUDA/ROCm GPUs, ``"tpu"`` on TPUs,
    ``"chunked"`` on anything else (memory linear in the length).
    """
    backend = backend or jax.default_backend()
    return {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}.get(backend, "chunked")


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
    position ``i`` sees only the keys ``j`` with ``|i - j| <= window // 2``: the ``chunked``,
    ``cpu``, ``gpu`` and ``tpu`` kernels skip the keys outside it, the others mask them.
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
    if window is not None and window // 2 >= max(q.shape[1], k.shape[1]) - 1:
        window = None  # the band covers every pair: plain attention, the same numbers
    if window is None:
        return fn(q, k, v, mask, precision=precision, dropout=dropout)
    if impl in _WINDOWED:
        return fn(q, k, v, mask, precision=precision, dropout=dropout, window=window)  # type: ignore[call-arg]
    return _windowed_reference(q, k, v, mask, window, precision=precision, dropout=dropout)
