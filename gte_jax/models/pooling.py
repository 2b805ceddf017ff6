"""Pooling and normalisation: pure functions on the encoder's last hidden states.

Every mode of sentence-transformers' ``Pooling`` module, computed as it computes
them on right-padded batches (BERT's), in float32. A mode string names one
mode, or several joined by ``+`` (``"cls+mean"``), whose vectors are
concatenated in that order, as ``Pooling(pooling_mode=("cls", "mean"))`` does.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

# sentence-transformers' names, in the order its legacy ``pooling_mode_*`` keys concatenate them.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


def _mask3(mask: jax.Array) -> jax.Array:
    return mask.astype(jnp.float32)[..., None]  # [B, T, 1]


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked mean over tokens, in float32.

    Args:
        hidden: ``[batch, tokens, dim]`` last hidden states.
        mask: ``[batch, tokens]``, 1 for real tokens and 0 for padding.

    Returns:
        ``[batch, dim]`` float32. A row with no tokens (batch padding) is zero,
        not NaN: the count is clamped as in sentence-transformers.
    """
    mask = _mask3(mask)
    summed = jnp.sum(hidden.astype(jnp.float32) * mask, axis=1)  # [B, D]
    count = jnp.maximum(jnp.sum(mask, axis=1), 1e-9)  # [B, 1]
    return summed / count


def mean_sqrt_len_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """The masked sum over tokens divided by the square root of the token count (``mean_sqrt_len_tokens``)."""
    mask = _mask3(mask)
    summed = jnp.sum(hidden.astype(jnp.float32) * mask, axis=1)  # [B, D]
    return summed / jnp.sqrt(jnp.maximum(jnp.sum(mask, axis=1), 1e-9))


def cls_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """The first token's hidden state, in float32 (``mask`` is unused: batches are right-padded)."""
    del mask
    return hidden[:, 0].astype(jnp.float32)


def max_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """The largest value of each feature over the real tokens; a row with no tokens is ``-inf``, as in
    sentence-transformers (only batch padding has none)."""
    real = mask[..., None] > 0  # [B, T, 1]
    return jnp.max(jnp.where(real, hidden.astype(jnp.float32), -jnp.inf), axis=1)


def weighted_mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over tokens weighted by position (1, 2, 3, ...), so later tokens count more (``weightedmean``)."""
    weights = _mask3(mask) * jnp.arange(1, hidden.shape[1] + 1, dtype=jnp.float32)[None, :, None]  # [B, T, 1]
    summed = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)  # [B, D]
    return summed / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)


def last_token_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """The last real token's hidden state (``lasttoken``); zero for a row with no tokens."""
    length = jnp.sum(mask > 0, axis=1)  # [B]
    last = jnp.where(length > 0, length - 1, hidden.shape[1] - 1)  # [B]
    picked = jnp.take_along_axis(hidden.astype(jnp.float32), last[:, None, None], axis=1)[:, 0]  # [B, D]
    return jnp.where((length > 0)[:, None], picked, 0.0)


_POOLERS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "cls": cls_pool,
    "max": max_pool,
    "mean": mean_pool,
    "mean_sqrt_len_tokens": mean_sqrt_len_pool,
    "weightedmean": weighted_mean_pool,
    "lasttoken": last_token_pool,
}


def pooling_modes(mode: str) -> tuple[str, ...]:
    """The modes of a mode string (``"cls+mean"`` → ``("cls", "mean")``).

    Raises:
        ValueError: a mode is not one of :data:`POOLING_MODES`.
    """
    modes = tuple(mode.split("+"))
    unknown = [m for m in modes if m not in _POOLERS]
    if unknown:
        raise ValueError(f"pooling mode {unknown[0]!r} is not supported; use one of {POOLING_MODES}.")
    return modes


def pool(hidden: jax.Array, mask: jax.Array, mode: str) -> jax.Array:
    """Pools ``[batch, tokens, dim]`` hidden states by ``mode`` into ``[batch, modes * dim]`` float32."""
    vectors = [_POOLERS[m](hidden, mask) for m in pooling_modes(mode)]
    return vectors[0] if len(vectors) == 1 else jnp.concatenate(vectors, axis=-1)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Scales each row to unit L2 norm, as ``torch.nn.functional.normalize`` does."""
    x = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)
