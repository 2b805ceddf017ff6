"""The ModernBERT encoder (gte-modernbert-base) as a Flax NNX module, with transformers' parameter names.

Pre-norm layers without biases: token embeddings and a LayerNorm; in each layer a LayerNorm (none in
layer 0), attention with a fused ``Wqkv`` and rotary positions, a LayerNorm and a GeGLU MLP (``Wi``
gives two halves, ``act(first) * second`` goes into ``Wo``); a final LayerNorm. Every
``global_attn_every_n_layers``-th layer (from layer 0) attends over the whole input with RoPE base
``global_rope_theta``; the others see ``local_attention // 2`` tokens either side, with
``local_rope_theta``. Shapes: B=batch, T=tokens, D=hidden, N=heads, H=head_dim, F=intermediate.

Dropout (``embedding_dropout``, ``attention_dropout``, ``mlp_dropout``) follows transformers and is
off unless the model is in train mode, as :class:`~gte_jax.models.bert.modeling.BertModel` describes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from gte_jax.kernels.attention import attention
from gte_jax.models.layers import Einsum, dropout_keys, matmul_precision, split_keys
from gte_jax.models.modernbert.config import ACTIVATIONS, ModernBertConfig
from gte_jax.models.rotary import inverse_frequencies, rotate


class LayerNorm(nnx.LayerNorm):
    """LayerNorm with statistics in float32 (two-pass variance), output in ``dtype``, bias only with ``norm_bias``."""

    def __init__(self, dim: int, eps: float, *, use_bias: bool, dtype: DTypeLike, rngs: nnx.Rngs):
        super().__init__(dim, epsilon=eps, dtype=jnp.float32, use_bias=use_bias, use_fast_variance=False, rngs=rngs)
        self.out_dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:  # type: ignore[override]  # takes no mask
        return super().__call__(x.astype(jnp.float32)).astype(self.out_dtype)


class Embeddings(nnx.Module):
    """Token embeddings, then LayerNorm (no positions: they are rotary, in attention)."""

    def __init__(self, cfg: ModernBertConfig, *, dtype: DTypeLike, act_dtype: DTypeLike, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        self.tok_embeddings = nnx.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=act_dtype, param_dtype=dtype, embedding_init=init, rngs=rngs
        )
        self.norm = LayerNorm(cfg.hidden_size, cfg.norm_eps, use_bias=cfg.norm_bias, dtype=act_dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.embedding_dropout, deterministic=True)

    def __call__(self, input_ids: jax.Array, key: jax.Array | None = None) -> jax.Array:
        return self.dropout(self.norm(self.tok_embeddings(input_ids)), rngs=key)  # [B, T, D]


class Attention(nnx.Module):
    """Self-attention with rotary q, k: global, or a window of ``local_attention`` tokens (``layer``'s type)."""

    def __init__(
        self,
        cfg: ModernBertConfig,
        layer: int,
        *,
        dtype: DTypeLike,
        act_dtype: DTypeLike,
        attention_impl: str,
        rngs: nnx.Rngs,
    ):
        D, N, H = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
        dense = functools.partial(Einsum, use_bias=cfg.attention_bias, dtype=dtype, out_dtype=act_dtype, rngs=rngs)
        self.Wqkv = dense("BTD,DCNH->BTCNH", (D, 3, N, H), (3, N, H))  # C: query, key, value
        self.Wo = dense("BTNH,NHD->BTD", (N, H, D), (D,))
        self.out_dropout = nnx.Dropout(cfg.attention_dropout, deterministic=True)
        is_global = cfg.is_global(layer)
        self.rope_theta = cfg.global_rope_theta if is_global else cfg.local_rope_theta
        self.window = None if is_global else cfg.local_attention
        self.head_dim = H
        self.attention_impl = attention_impl
        self.precision = matmul_precision(act_dtype)
        self.probs_dropout_rate = cfg.attention_dropout
        self.deterministic = True  # set by model.train() / model.eval()

    def __call__(self, x: jax.Array, mask: jax.Array, key: jax.Array | None = None) -> jax.Array:
        probs_key, out_key = split_keys(None if self.deterministic else key, 2)
        qkv = self.Wqkv(x)  # [B, T, 3, N, H]
        positions = jnp.arange(x.shape[1])
        inv_freq = inverse_frequencies(self.head_dim, self.rope_theta)
        q, k = (rotate(qkv[:, :, i], positions, inv_freq) for i in (0, 1))
        ctx = attention(  # [B, T, N, H]
            q,
            k,
            qkv[:, :, 2],
            mask,
            impl=self.attention_impl,
            precision=self.precision,
            dropout_rate=self.probs_dropout_rate,
            dropout_rng=probs_key,
            window=self.window,
        )
        return self.out_dropout(self.Wo(ctx), rngs=out_key)  # [B, T, D]


class MLP(nnx.Module):
    """GeGLU: ``Wo(act(x Wi_input) * (x Wi_gate))``."""

    def __init__(self, cfg: ModernBertConfig, *, dtype: DTypeLike, act_dtype: DTypeLike, rngs: nnx.Rngs):
        D, F = cfg.hidden_size, cfg.intermediate_size
        dense = functools.partial(Einsum, use_bias=cfg.mlp_bias, dtype=dtype, out_dtype=act_dtype, rngs=rngs)
        self.Wi = dense("BTD,DCF->BTCF", (D, 2, F), (2, F))  # C: input, gate
        self.Wo = dense("BTF,FD->BTD", (F, D), (D,))
        self.act = ACTIVATIONS[cfg.hidden_activation]
        self.dropout = nnx.Dropout(cfg.mlp_dropout, deterministic=True)

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        h = self.Wi(x)  # [B, T, 2, F]
        return self.Wo(self.dropout(self.act(h[:, :, 0]) * h[:, :, 1], rngs=key))  # [B, T, D]


class Layer(nnx.Module):
    """One pre-norm block: ``x + attn(attn_norm(x))``, then ``x + mlp(mlp_norm(x))``."""

    def __init__(
        self,
        cfg: ModernBertConfig,
        layer: int,
        *,
        dtype: DTypeLike,
        act_dtype: DTypeLike,
        attention_impl: str,
        rngs: nnx.Rngs,
    ):
        norm = functools.partial(
            LayerNorm, cfg.hidden_size, cfg.norm_eps, use_bias=cfg.norm_bias, dtype=act_dtype, rngs=rngs
        )
        # Layer 0's input is the embeddings' LayerNorm already: transformers has an Identity there.
        self.attn_norm = norm() if layer else None
        self.attn = Attention(cfg, layer, dtype=dtype, act_dtype=act_dtype, attention_impl=attention_impl, rngs=rngs)
        self.mlp_norm = norm()
        self.mlp = MLP(cfg, dtype=dtype, act_dtype=act_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array, key: jax.Array | None = None) -> jax.Array:
        attn_key, mlp_key = split_keys(key, 2)
        x = x + self.attn(x if self.attn_norm is None else self.attn_norm(x), mask, attn_key)
        return x + self.mlp(self.mlp_norm(x), mlp_key)


class ModernBertModel(nnx.Module):
    """ModernBERT encoder returning the last hidden states (after ``final_norm``).

    Args:
        cfg: shapes, layer types, RoPE bases and window.
        dtype: parameter and matmul-operand dtype (matmuls accumulate in float32 either way);
            LayerNorm, softmax and RoPE always run in float32.
        act_dtype: the hidden states between matmuls (``dtype`` when None).
        attention_impl: a name from :data:`gte_jax.kernels.attention.ATTENTION_IMPLS`.
        rngs: initialiser keys; the weights are random until loaded from a checkpoint.
    """

    def __init__(
        self,
        cfg: ModernBertConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        act_dtype: DTypeLike | None = None,
        attention_impl: str = "einsum",
        rngs: nnx.Rngs,
    ):
        self.config = cfg
        act_dtype = dtype if act_dtype is None else act_dtype
        self.embeddings = Embeddings(cfg, dtype=dtype, act_dtype=act_dtype, rngs=rngs)
        self.layers = nnx.List(
            [
                Layer(cfg, i, dtype=dtype, act_dtype=act_dtype, attention_impl=attention_impl, rngs=rngs)
                for i in range(cfg.num_hidden_layers)
            ]
        )
        self.final_norm = LayerNorm(cfg.hidden_size, cfg.norm_eps, use_bias=cfg.norm_bias, dtype=act_dtype, rngs=rngs)
        self.deterministic = True  # set by model.train() / model.eval()

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        rngs: nnx.Rngs | jax.Array | None = None,
        remat: bool = False,
    ) -> jax.Array:
        """Encodes a right-padded batch (positions 0, 1, ... from the first token, as transformers numbers them).

        Args:
            input_ids: ``[batch, tokens]`` int token ids.
            attention_mask: ``[batch, tokens]``, 1 for real tokens, 0 for padding.
            token_type_ids: ignored (ModernBERT has no token types); accepted for the common signature.
            rngs: train mode only: the dropout randomness, ``nnx.Rngs(dropout=...)`` or a PRNG key.
            remat: recompute each layer's activations in the backward pass instead of storing them.

        Returns:
            ``[batch, tokens, hidden]`` last hidden states.

        Raises:
            ValueError: the model is in train mode and ``rngs`` is None.
        """
        keys = dropout_keys("ModernBertModel", self.deterministic, rngs, len(self.layers) + 1)
        x = self.embeddings(input_ids, keys[0])
        run = nnx.remat(Layer.__call__) if remat else Layer.__call__
        for layer, layer_key in zip(self.layers, keys[1:], strict=True):
            x = run(layer, x, attention_mask, layer_key)
        return self.final_norm(x)


class ClassifierHead(nnx.Module):
    """``ModernBertForSequenceClassification``'s head: CLS or masked mean (``classifier_pooling``), then
    dense -> activation -> LayerNorm (``head``), dropout, ``classifier``."""

    def __init__(self, cfg: ModernBertConfig, num_labels: int, *, dtype: DTypeLike, rngs: nnx.Rngs):
        D = cfg.hidden_size
        self.dense = Einsum("BD,DE->BE", (D, D), (D,), dtype=dtype, use_bias=cfg.classifier_bias, rngs=rngs)
        self.norm = LayerNorm(D, cfg.norm_eps, use_bias=cfg.norm_bias, dtype=jnp.float32, rngs=rngs)
        self.classifier = Einsum("BD,DL->BL", (D, num_labels), (num_labels,), dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.classifier_dropout, deterministic=True)
        self.pooling = cfg.classifier_pooling
        self.activation = cfg.classifier_activation

    def __call__(self, hidden: jax.Array, mask: jax.Array, key: jax.Array | None = None) -> jax.Array:
        hidden = hidden.astype(jnp.float32)
        if self.pooling == "mean":
            weights = mask.astype(jnp.float32)[..., None]  # [B, T, 1]
            pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        else:
            pooled = hidden[:, 0]  # [B, D]
        pooled = self.norm(ACTIVATIONS[self.activation](self.dense(pooled)))
        return self.classifier(self.dropout(pooled, rngs=key)).astype(jnp.float32)  # [B, L]
