"""Layers every model family shares: a dense layer over named axes, a float32 LayerNorm, GELU, and the
helpers for dtypes and dropout keys. Numerics as PyTorch computes them (see each docstring).

Shapes in comments use B=batch, T=tokens, D=hidden, N=heads, H=head_dim, F=intermediate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

_HIGHEST = jax.lax.Precision.HIGHEST


def split_keys(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    """``n`` independent keys from ``key``, or ``n`` Nones in eval mode."""
    return [None] * n if key is None else list(jax.random.split(key, n))


def matmul_precision(dtype: DTypeLike) -> jax.lax.Precision | None:
    # float32 must mean float32: TPUs otherwise run f32 matmuls in bf16 passes.
    return _HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def gelu(x: jax.Array) -> jax.Array:
    """BERT's exact GELU as PyTorch writes it, ``x * 0.5 * (1 + erf(x / sqrt(2)))``: within 1 ulp of
    ``jax.nn.gelu(x, approximate=False)`` (its ``erfc`` form) and 2.5x faster on XLA:CPU."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


def default_act_dtype(dtype: DTypeLike, platform: str) -> jnp.dtype:
    """The hidden states' dtype for weights in ``dtype`` on ``platform`` (``"cpu"``, ``"gpu"``, ``"tpu"``).

    float32 on CPU whatever the weights: XLA:CPU runs attention and the elementwise work fastest
    in float32, and its fast bf16 dots take bf16 operands with float32 results anyway
    (``bench/README.md``, "Low precision on CPU"). The weights' dtype elsewhere.
    """
    return jnp.dtype(jnp.float32 if platform == "cpu" else dtype)


class Einsum(nnx.Module):
    """A dense layer over named axes: ``y = einsum(eqn, x, kernel) + bias``.

    A float32 kernel multiplies in float32 (``HIGHEST``). A low-precision kernel (bfloat16)
    multiplies low-precision operands with float32 accumulation (``preferred_element_type``),
    adds the bias in float32 and returns ``out_dtype``: the form that reaches the CPU's bf16
    dot instructions through XLA:CPU (a bf16 -> bf16 dot is run as a float32 dot between
    conversions) as well as the GPU's and TPU's matrix units.
    """

    def __init__(
        self,
        eqn: str,
        kernel_shape: tuple[int, ...],
        bias_shape: tuple[int, ...],
        *,
        dtype: DTypeLike,
        out_dtype: DTypeLike | None = None,
        use_bias: bool = True,
        rngs: nnx.Rngs,
    ):
        self.eqn = eqn
        self.kernel = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), kernel_shape, dtype))
        self.bias = nnx.Param(jnp.zeros(bias_shape, dtype)) if use_bias else None  # ModernBERT, GTE's MLP: none
        self.precision = matmul_precision(dtype)
        self.out_dtype = jnp.dtype(out_dtype or dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        if kernel.dtype == jnp.float32:
            y = jnp.einsum(self.eqn, x, kernel, precision=self.precision)
            return y if self.bias is None else y + self.bias[...]
        y = jnp.einsum(self.eqn, x.astype(kernel.dtype), kernel, preferred_element_type=jnp.float32)
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        return y.astype(self.out_dtype)


class LayerNorm(nnx.LayerNorm):
    """BERT's LayerNorm: statistics in float32 (two-pass variance), output in ``dtype``."""

    def __init__(self, dim: int, eps: float, *, dtype: DTypeLike, rngs: nnx.Rngs):
        super().__init__(dim, epsilon=eps, dtype=jnp.float32, use_fast_variance=False, rngs=rngs)
        self.out_dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:  # type: ignore[override]  # BERT's LayerNorm takes no mask
        return super().__call__(x.astype(jnp.float32)).astype(self.out_dtype)


def dropout_keys(model: str, deterministic: bool, rngs: nnx.Rngs | jax.Array | None, n: int) -> list[jax.Array | None]:
    """``n`` dropout keys for a model's call: from ``rngs`` (its ``dropout`` stream, or a PRNG key) in train
    mode, Nones in eval mode.

    Raises:
        ValueError: the model is in train mode and ``rngs`` is None (the message names ``model``).
    """
    if deterministic:
        return [None] * n
    if rngs is None:
        raise ValueError(
            f"{model} is in train mode (dropout on) but got no rngs; pass rngs=nnx.Rngs(dropout=seed) "
            "or call model.eval() to embed."
        )
    return split_keys(rngs.dropout() if isinstance(rngs, nnx.Rngs) else rngs, n)
