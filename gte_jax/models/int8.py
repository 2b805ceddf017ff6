"""Dynamic int8 quantisation of the linear layers (``dtype="int8"``).

Each dense layer's kernel is quantised once, at load, to int8 with one float32 scale per output
channel (symmetric: ``scale = max|w| / 127`` over the contracted axes). At run time each token's
input vector is quantised the same way (per-token scale over the contracted axes), the product
is an int8 x int8 dot accumulated in int32 (XLA:CPU lowers it to its YNNPACK kernels, which use
AVX512-VNNI / AMX-INT8 where the CPU has them), and the result is rescaled to float32 and the
bias added. Everything else (embeddings, LayerNorm, attention, GELU, pooling) stays float32.

Per-token activation scales track BERT's very uneven token norms better than the per-tensor
scale of ONNX Runtime's dynamic quantisation; ``tests/test_low_precision.py`` holds the
accuracy against float32 on the real all-MiniLM-L6-v2 weights.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from gte_jax.models.layers import Einsum

_QMAX = 127.0


def _axes(eqn: str) -> tuple[str, str, str]:
    """``"BTD,DNH->BTNH"`` -> (input, kernel, output) axis letters."""
    inputs, out = eqn.split("->")
    x, w = inputs.split(",")
    return x, w, out


def _symmetric(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """int8 values and float32 scales (``axes`` reduced, kept as size 1) with ``x ~= q * scale``."""
    scale = jnp.max(jnp.abs(x), axis=axes, keepdims=True) / _QMAX
    scale = jnp.where(scale > 0, scale, 1.0)  # an all-zero row quantises to zeros
    return jnp.round(x / scale).astype(jnp.int8), scale


@functools.partial(jax.jit, static_argnums=1)
def _quantize_kernel(w: jax.Array, contracted: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Per-output-channel int8 kernel and its scales (one compile per kernel shape, on the kernel's devices)."""
    q, scale = _symmetric(w.astype(jnp.float32), contracted)
    return q, jnp.squeeze(scale, contracted)


class Int8Einsum(nnx.Module):
    """:class:`~gte_jax.models.bert.modeling.Einsum` with an int8 kernel and per-token int8 inputs.

    Built from a float layer with :meth:`from_float`; the float32 bias is kept as it is.
    """

    def __init__(self, eqn: str, kernel: jax.Array, scale: jax.Array, bias: jax.Array):
        self.eqn = eqn
        self.kernel = nnx.Param(kernel)  # int8, the float kernel's shape
        self.scale = nnx.Param(scale)  # float32, the kernel's output axes
        self.bias = nnx.Param(bias)  # float32

    @classmethod
    def from_float(cls, layer: Einsum) -> Int8Einsum:
        """Quantises ``layer``'s kernel per output channel (on the kernel's devices)."""
        x_axes, w_axes, out_axes = _axes(layer.eqn)
        contracted = tuple(i for i, a in enumerate(w_axes) if a in x_axes and a not in out_axes)
        q, scale = _quantize_kernel(layer.kernel.get_value(), contracted)
        bias = (  # no bias (ModernBERT, GTE's gated MLP): zeros over the kernel's output axes
            layer.bias.get_value().astype(jnp.float32)
            if layer.bias is not None
            else jnp.zeros([d for a, d in zip(w_axes, layer.kernel.shape, strict=True) if a in out_axes], jnp.float32)
        )
        return cls(layer.eqn, q, scale, bias)

    def __call__(self, x: jax.Array) -> jax.Array:
        x_axes, w_axes, out_axes = _axes(self.eqn)
        contracted = tuple(i for i, a in enumerate(x_axes) if a in w_axes and a not in out_axes)
        xq, x_scale = _symmetric(x.astype(jnp.float32), contracted)
        acc = jnp.einsum(self.eqn, xq, self.kernel[...], preferred_element_type=jnp.int32)
        x_rest = "".join(a for a in x_axes if a not in w_axes or a in out_axes)
        w_rest = "".join(a for a in w_axes if a not in x_axes or a in out_axes)
        scale = jnp.einsum(f"{x_rest},{w_rest}->{out_axes}", jnp.squeeze(x_scale, contracted), self.scale[...])
        return acc.astype(jnp.float32) * scale + self.bias[...]


def quantize_linear(model: nnx.Module) -> nnx.Module:
    """Replaces every dense layer of ``model`` (those its family names: for BERT Q, K, V, attention
    output, FFN in and out) with an :class:`Int8Einsum`, in place; returns ``model``. Embeddings and
    LayerNorms stay float.

    Raises:
        ValueError: the model is already quantised.
    """
    from gte_jax.models import family_of

    for parent, name in family_of(getattr(model, "config", None)).dense_layers(model):
        dense = getattr(parent, name)
        if not isinstance(dense, Einsum):
            raise ValueError(f"the model's {name} layer is already {type(dense).__name__}; quantise a float model.")
        setattr(parent, name, Int8Einsum.from_float(dense))
    return model


def is_quantized(model: nnx.Module) -> bool:
    """Whether ``model``'s dense layers are int8 (:func:`quantize_linear`)."""
    return any(isinstance(node, Int8Einsum) for _, node in nnx.iter_graph(model))
