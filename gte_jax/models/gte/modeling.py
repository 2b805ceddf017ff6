"""The GTE v1.5 encoder as a Flax NNX module, named as transformers' native ``GteModel``.

Word (+ token-type) embeddings and LayerNorm, no position table; each layer is rotary self-attention
(q/k/v/o projections with bias) then a gated GELU MLP (``down(act(gate(x)) * up(x))``, up and gate
without bias), each followed by residual and LayerNorm (post-LN, as BERT). Dropout sits where
transformers puts it and follows :class:`~gte_jax.models.bert.modeling.BertModel`'s conventions: off in eval
mode (the default), on after ``model.train()`` with the randomness passed per call.
Shapes in comments: B=batch, T=tokens, D=hidden, N=heads, H=head_dim, F=intermediate.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from gte_jax.kernels.attention import attention
from gte_jax.models.gte.config import ACTIVATIONS, GteConfig
from gte_jax.models.layers import Einsum, LayerNorm, dropout_keys, gelu, matmul_precision, split_keys
from gte_jax.models.rotary import inverse_frequencies, rotate


def activation(name: str, x: jax.Array) -> jax.Array:
    """The GELU that ``hidden_act`` names (exact, or the tanh approximation of ``gelu_new``)."""
    return jax.nn.gelu(x, approximate=True) if ACTIVATIONS[name] else gelu(x)


def rope_frequencies(cfg: GteConfig) -> np.ndarray:
    """The inverse frequencies of the config's RoPE: static NTK by ``F`` is base ``theta * F`` with every
    frequency divided by ``F ** (2 / head_dim)`` (the hub's ``NTKScalingRotaryEmbedding``)."""
    F = cfg.rope_ntk_factor
    return inverse_frequencies(cfg.head_dim, cfg.rope_theta * F, F ** (2 / cfg.head_dim))


class Embeddings(nnx.Module):
    """Word embeddings (+ token-type embeddings unless ``type_vocab_size`` is 0), then LayerNorm."""

    def __init__(self, cfg: GteConfig, *, dtype: DTypeLike, act_dtype: DTypeLike, rngs: nnx.Rngs):
        D = cfg.hidden_size
        embed = functools.partial(
            nnx.Embed, dtype=act_dtype, param_dtype=dtype, embedding_init=nnx.initializers.normal(0.02), rngs=rngs
        )
        self.word_embeddings = embed(cfg.vocab_size, D)
        self.token_type_embeddings = embed(cfg.type_vocab_size, D) if cfg.type_vocab_size else None
        self.LayerNorm = LayerNorm(D, cfg.layer_norm_eps, dtype=act_dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob, deterministic=True)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, key: jax.Array | None = None) -> jax.Array:
        x = self.word_embeddings(input_ids)  # [B, T, D]
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x), rngs=key)


class Attention(nnx.Module):
    """Rotary multi-head self-attention with its output projection (transformers' ``self_attn``)."""

    def __init__(self, cfg: GteConfig, *, dtype: DTypeLike, act_dtype: DTypeLike, attention_impl: str, rngs: nnx.Rngs):
        D, N, H = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
        dense = functools.partial(Einsum, dtype=dtype, out_dtype=act_dtype, rngs=rngs)
        self.q_proj = dense("BTD,DNH->BTNH", (D, N, H), (N, H))
        self.k_proj = dense("BTD,DNH->BTNH", (D, N, H), (N, H))
        self.v_proj = dense("BTD,DNH->BTNH", (D, N, H), (N, H))
        self.o_proj = dense("BTNH,NHD->BTD", (N, H, D), (D,))
        self.attention_impl = attention_impl
        self.precision = matmul_precision(act_dtype)
        self.probs_dropout_rate = cfg.attention_probs_dropout_prob
        self.deterministic = True  # set by model.train() / model.eval()

    def __call__(self, x: jax.Array, mask: jax.Array, inv_freq: jax.Array, key: jax.Array | None = None) -> jax.Array:
        positions = jnp.arange(x.shape[1])  # [T]
        q = rotate(self.q_proj(x), positions, inv_freq)  # [B, T, N, H]
        k = rotate(self.k_proj(x), positions, inv_freq)
        ctx = attention(  # [B, T, N, H]
            q,
            k,
            self.v_proj(x),
            mask,
            impl=self.attention_impl,
            precision=self.precision,
            dropout_rate=self.probs_dropout_rate,
            dropout_rng=None if self.deterministic else key,
        )
        return self.o_proj(ctx)  # [B, T, D]


class MLP(nnx.Module):
    """``down_proj(dropout(act(gate_proj(x)) * up_proj(x)))``."""

    def __init__(self, cfg: GteConfig, *, dtype: DTypeLike, act_dtype: DTypeLike, rngs: nnx.Rngs):
        D, F = cfg.hidden_size, cfg.intermediate_size
        self.up_proj = Einsum("BTD,DF->BTF", (D, F), (F,), dtype=dtype, out_dtype=act_dtype, use_bias=False, rngs=rngs)
        self.gate_proj = Einsum(
            "BTD,DF->BTF", (D, F), (F,), dtype=dtype, out_dtype=act_dtype, use_bias=False, rngs=rngs
        )
        self.down_proj = Einsum("BTF,FD->BTD", (F, D), (D,), dtype=dtype, out_dtype=act_dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob, deterministic=True)
        self.hidden_act = cfg.hidden_act

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        h = activation(self.hidden_act, self.gate_proj(x)) * self.up_proj(x)  # [B, T, F]
        return self.down_proj(self.dropout(h, rngs=key))  # [B, T, D]


class Layer(nnx.Module):
    """One post-LN block: attention, residual, LayerNorm; gated MLP, residual, LayerNorm."""

    def __init__(self, cfg: GteConfig, *, dtype: DTypeLike, act_dtype: DTypeLike, attention_impl: str, rngs: nnx.Rngs):
        D = cfg.hidden_size
        self.self_attn = Attention(cfg, dtype=dtype, act_dtype=act_dtype, attention_impl=attention_impl, rngs=rngs)
        self.post_attention_dropout = nnx.Dropout(cfg.hidden_dropout_prob, deterministic=True)
        self.post_attention_layernorm = LayerNorm(D, cfg.layer_norm_eps, dtype=act_dtype, rngs=rngs)
        self.mlp = MLP(cfg, dtype=dtype, act_dtype=act_dtype, rngs=rngs)
        self.post_mlp_dropout = nnx.Dropout(cfg.hidden_dropout_prob, deterministic=True)
        self.post_mlp_layernorm = LayerNorm(D, cfg.layer_norm_eps, dtype=act_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array, inv_freq: jax.Array, key: jax.Array | None = None) -> jax.Array:
        attn_key, attn_out_key, mlp_key, mlp_out_key = split_keys(key, 4)
        h = self.post_attention_dropout(self.self_attn(x, mask, inv_freq, attn_key), rngs=attn_out_key)
        x = self.post_attention_layernorm(x + h)  # [B, T, D]
        h = self.post_mlp_dropout(self.mlp(x, mlp_key), rngs=mlp_out_key)
        return self.post_mlp_layernorm(x + h)  # [B, T, D]


class GteModel(nnx.Module):
    """GTE v1.5 encoder returning the last hidden states (no pooler).

    Args:
        cfg: shapes, RoPE and LayerNorm settings.
        dtype: parameter and matmul-operand dtype (``float32`` or ``bfloat16``), as in
            :class:`~gte_jax.models.bert.modeling.BertModel`.
        act_dtype: the hidden states' dtype between matmuls (``dtype`` when None).
        attention_impl: a name from :data:`gte_jax.kernels.attention.ATTENTION_IMPLS`.
        rngs: initialiser keys; the weights are random until loaded from a checkpoint.
    """

    def __init__(
        self,
        cfg: GteConfig,
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
                Layer(cfg, dtype=dtype, act_dtype=act_dtype, attention_impl=attention_impl, rngs=rngs)
                for _ in range(cfg.num_hidden_layers)
            ]
        )
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
        """Encodes a padded batch (arguments and errors as :meth:`gte_jax.models.bert.modeling.BertModel.__call__`).

        ``token_type_ids`` are read only when the model has token-type embeddings (``type_vocab_size`` > 0).

        Returns:
            ``[batch, tokens, hidden]`` last hidden states.
        """
        keys = dropout_keys("GteModel", self.deterministic, rngs, len(self.layers) + 1)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, keys[0])
        inv_freq = jnp.asarray(rope_frequencies(self.config))
        run = nnx.remat(Layer.__call__) if remat else Layer.__call__
        for layer, layer_key in zip(self.layers, keys[1:], strict=True):
            x = run(layer, x, attention_mask, inv_freq, layer_key)
        return x
