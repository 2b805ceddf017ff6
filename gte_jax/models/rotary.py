"""Rotary position embeddings (RoPE), as transformers' Llama computes them (``rotate_half`` form).

Shared by the families with rotary positions (GTE v1.5 / multilingual, ModernBERT). Angles are
computed in float32 from integer positions, so 8,192-token inputs keep their precision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def inverse_frequencies(head_dim: int, theta: float, factor: float = 1.0) -> np.ndarray:
    """``1 / theta^(2i / head_dim) / factor`` for ``i < head_dim / 2``, float32.

    ``factor`` is transformers' ``linear`` scaling (positions divided by it). GTE's static NTK
    scaling by ``F`` is ``theta * F`` with ``factor = F ** (2 / head_dim)`` (see the GTE family).
    """
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
    return (1.0 / (np.float32(theta) ** exponents) / np.float32(factor)).astype(np.float32)


def rotate(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray | jax.Array) -> jax.Array:
    """Applies RoPE to ``x`` of shape ``[B, T, N, H]`` at ``positions`` (``[T]`` or ``[B, T]``).

    The rotation runs in float32 and returns ``x``'s dtype.
    """
    pos = positions.astype(jnp.float32)
    angles = pos[..., None] * jnp.asarray(inv_freq, jnp.float32)  # [(B,) T, H/2]
    angles = jnp.concatenate([angles, angles], axis=-1)  # [(B,) T, H]
    if angles.ndim == 2:
        angles = angles[None]
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]  # [B|1, T, 1, H]
    xf = x.astype(jnp.float32)
    half = xf.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos + rotated * sin).astype(x.dtype)
