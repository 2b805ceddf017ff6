"""Pooling and normalisation: pure functions on the encoder's last hidden states."""

from __future__ import annotations

import jax
import jax.numpy as jnp

POOLING_MODES = ("mean", "cls")


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked mean over tokens, in float32.

    Args:
        hidden: ``[batch, tokens, dim]`` last hidden states.
        mask: ``[batch, tokens]``, 1 for real tokens and 0 for padding.

    Returns:
        ``[batch, dim]`` float32. A row with no tokens (batch padding) is zero,
        not NaN: the count is clamped as in sentence-transformers.
    """
    mask = mask.astype(jnp.float32)[..., None]  # [B, T, 1]
    summed = jnp.sum(hidden.astype(jnp.float32) * mask, axis=1)  # [B, D]
    count = jnp.maximum(jnp.sum(mask, axis=1), 1e-9)  # [B, 1]
    return summed / count


def cls_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """The first token's hidden state, in float32 (``mask`` is unused)."""
    del mask
    return hidden[:, 0].astype(jnp.float32)


def pool(hidden: jax.Array, mask: jax.Array, mode: str) -> jax.Array:
    """Dispatches to :func:`mean_pool` or :func:`cls_pool` by name."""
    if mode == "mean":
        return mean_pool(hidden, mask)
    if mode == "cls":
        return cls_pool(hidden, mask)
    raise ValueError(f"pooling mode {mode!r} is not supported; use one of {POOLING_MODES}.")


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Scales each row to unit L2 norm, as ``torch.nn.functional.normalize`` does."""
    x = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)
