"""Scaled dot-product attention kernels, chosen by name.

Every kernel takes the same arguments and gives the same numbers (within
float rounding); they differ in how XLA lowers them on each backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ATTENTION_IMPLS = ("einsum",)


def einsum_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, precision=None) -> jax.Array:
    """Reference attention: einsums with a float32 softmax.

    Args:
        q, k, v: ``[batch, tokens, heads, head_dim]``.
        mask: ``[batch, tokens]``, true for real key tokens.
        precision: passed to every einsum (``HIGHEST`` for float32 parity on TPU).

    Returns:
        ``[batch, tokens, heads, head_dim]`` in ``q``'s dtype.
    """
    scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
    scores = jnp.einsum("BTNH,BSNH->BNTS", q, k, precision=precision, preferred_element_type=jnp.float32)
    scores = scores * scale
    # The most negative float instead of -inf: a fully padded row stays finite.
    scores = jnp.where(mask[:, None, None, :].astype(bool), scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # [B, N, T, S]
    return jnp.einsum("BNTS,BSNH->BTNH", probs, v, precision=precision)


_IMPLS = {"einsum": einsum_attention}


def default_impl(backend: str | None = None) -> str:
    """The fastest faithful kernel for a backend (``jax.default_backend()`` when None)."""
    del backend
    return "einsum"


def attention(q, k, v, mask, *, impl: str = "einsum", precision=None) -> jax.Array:
    """Runs the attention kernel named ``impl`` (one of :data:`ATTENTION_IMPLS`)."""
    try:
        fn = _IMPLS[impl]
    except KeyError:
        raise ValueError(f"attention impl {impl!r} is not known; use one of {ATTENTION_IMPLS}.") from None
    return fn(q, k, v, mask, precision=precision)
