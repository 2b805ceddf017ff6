"""The BERT encoder behind the GTE models, as a Flax NNX module.

Module and parameter names mirror the Hugging Face checkpoint (``query``,
``key``, ``value``, ``LayerNorm`` ...), so that ``params.py`` maps one onto the
other with a plain table. Shapes in comments use B=batch, T=tokens,
D=hidden, N=heads, H=head_dim, F=intermediate.

Dropout follows BERT (after the embeddings, on the attention probabilities,
after each output projection) and is off unless the model is in train mode
(``model.train()``; ``model.eval()`` switches back). Modules are built in eval
mode, where the forward is exactly the inference forward. In train mode the
caller passes the dropout randomness per call (``rngs=nnx.Rngs(dropout=key)``
or a key), so the model holds no random state and its state is its parameters.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from gte_jax.kernels.attention import attention
from gte_jax.models.bert.config import GTEConfig
from gte_jax.models.layers import Einsum, LayerNorm, dropout_keys, gelu, matmul_precision, split_keys


class Embeddings(nnx.Module):
    """Word + position + token-type embeddings, then LayerNorm."""

    def __init__(self, cfg: GTEConfig, *, dtype: DTypeLike, act_dtype: DTypeLike, rngs: nnx.Rngs):
        D = cfg.hidden_size
        init = nnx.initializers.normal(0.02)
        self.word_embeddings = nnx.Embed(
            cfg.vocab_size, D, dtype=act_dtype, param_dtype=dtype, embedding_init=init, rngs=rngs
        )
        self.position_embeddings = nnx.Embed(
            cfg.max_position_embeddings, D, dtype=act_dtype, param_dtype=dtype, embedding_init=init, rngs=rngs
        )
        self.token_type_embeddings = nnx.Embed(
            cfg.type_vocab_size, D, dtype=act_dtype, param_dtype=dtype, embedding_init=init, rngs=rngs
        )
        self.LayerNorm = LayerNorm(D, cfg.layer_norm_eps, dtype=act_dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob, deterministic=True)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, key: jax.Array | None = None) -> jax.Array:
        positions = jnp.arange(input_ids.shape[1])[None, :]  # [1, T]
        x = (  # [B, T, D]
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x), rngs=key)


class SelfAttention(nnx.Module):
    """Multi-head self-attention with the output projection (HF ``attention.self`` + ``attention.output.dense``)."""

    def __init__(self, cfg: GTEConfig, *, dtype: DTypeLike, act_dtype: DTypeLike, attention_impl: str, rngs: nnx.Rngs):
        D, N, H = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
        dense = functools.partial(Einsum, dtype=dtype, out_dtype=act_dtype, rngs=rngs)
        self.query = dense("BTD,DNH->BTNH", (D, N, H), (N, H))
        self.key = dense("BTD,DNH->BTNH", (D, N, H), (N, H))
        self.value = dense("BTD,DNH->BTNH", (D, N, H), (N, H))
        self.output = dense("BTNH,NHD->BTD", (N, H, D), (D,))
        self.output_dropout = nnx.Dropout(cfg.hidden_dropout_prob, deterministic=True)
        self.attention_impl = attention_impl
        self.precision = matmul_precision(act_dtype)
        self.probs_dropout_rate = cfg.attention_probs_dropout_prob
        self.deterministic = True  # set by model.train() / model.eval()

    def __call__(self, x: jax.Array, mask: jax.Array, key: jax.Array | None = None) -> jax.Array:
        probs_key, out_key = split_keys(None if self.deterministic else key, 2)
        q, k, v = self.query(x), self.key(x), self.value(x)  # [B, T, N, H] each
        ctx = attention(  # [B, T, N, H]
            q,
            k,
            v,
            mask,
            impl=self.attention_impl,
            precision=self.precision,
            dropout_rate=self.probs_dropout_rate,
            dropout_rng=probs_key,
        )
        return self.output_dropout(self.output(ctx), rngs=out_key)  # [B, T, D]


class Layer(nnx.Module):
    """One post-LN transformer block, as in BERT."""

    def __init__(self, cfg: GTEConfig, *, dtype: DTypeLike, act_dtype: DTypeLike, attention_impl: str, rngs: nnx.Rngs):
        D, F = cfg.hidden_size, cfg.intermediate_size
        self.attention = SelfAttention(cfg, dtype=dtype, act_dtype=act_dtype, attention_impl=attention_impl, rngs=rngs)
        self.attention_LayerNorm = LayerNorm(D, cfg.layer_norm_eps, dtype=act_dtype, rngs=rngs)
        self.intermediate = Einsum("BTD,DF->BTF", (D, F), (F,), dtype=dtype, out_dtype=act_dtype, rngs=rngs)
        self.output = Einsum("BTF,FD->BTD", (F, D), (D,), dtype=dtype, out_dtype=act_dtype, rngs=rngs)
        self.output_LayerNorm = LayerNorm(D, cfg.layer_norm_eps, dtype=act_dtype, rngs=rngs)
        self.output_dropout = nnx.Dropout(cfg.hidden_dropout_prob, deterministic=True)

    def __call__(self, x: jax.Array, mask: jax.Array, key: jax.Array | None = None) -> jax.Array:
        attention_key, output_key = split_keys(key, 2)
        x = self.attention_LayerNorm(x + self.attention(x, mask, attention_key))  # [B, T, D]
        h = gelu(self.intermediate(x))  # [B, T, F]
        return self.output_LayerNorm(x + self.output_dropout(self.output(h), rngs=output_key))  # [B, T, D]


class BertModel(nnx.Module):
    """BERT encoder returning the last hidden states (no pooler: GTE does not use it).

    Args:
        cfg: shapes and LayerNorm epsilon.
        dtype: parameter and matmul-operand dtype (``float32`` or ``bfloat16``; matmuls
            accumulate in float32 either way). LayerNorm, softmax and pooling always run in float32.
        act_dtype: the hidden states between matmuls (``dtype`` when None). float32 with
            bfloat16 weights is the fast form on CPU (XLA:CPU runs attention and elementwise
            work fastest in float32); bfloat16 halves activation traffic on GPU and TPU.
        attention_impl: a name from :data:`gte_jax.kernels.attention.ATTENTION_IMPLS`.
        rngs: initialiser keys; the weights are random until loaded from a checkpoint.

    The module starts in eval mode; ``model.train()`` turns BERT's dropout on (rates from the
    config) and ``model.eval()`` off again.
    """

    def __init__(
        self,
        cfg: GTEConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        act_dtype: DTypeLike | None = None,
        attention_impl: str = "einsum",
        rngs: nnx.Rngs,
    ):
        self.config = cfg
        self.attention_impl = attention_impl
        act_dtype = dtype if act_dtype is None else act_dtype
        self.embeddings = Embeddings(cfg, dtype=dtype, act_dtype=act_dtype, rngs=rngs)
        self.layer = nnx.List(
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
        """Encodes a padded batch.

        Args:
            input_ids: ``[batch, tokens]`` int token ids.
            attention_mask: ``[batch, tokens]``, 1 for real tokens, 0 for padding.
            token_type_ids: ``[batch, tokens]``; zeros when omitted (single segment).
            rngs: train mode only: the dropout randomness, ``nnx.Rngs(dropout=...)`` (its
                ``dropout`` stream) or a PRNG key. Ignored in eval mode.
            remat: recompute each layer's activations in the backward pass instead of
                storing them (``nnx.remat``): less memory for gradients, one more forward.

        Returns:
            ``[batch, tokens, hidden]`` last hidden states.

        Raises:
            ValueError: the model is in train mode and ``rngs`` is None.
        """
        keys = dropout_keys("BertModel", self.deterministic, rngs, len(self.layer) + 1)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, keys[0])
        run = nnx.remat(Layer.__call__) if remat else Layer.__call__
        for layer, layer_key in zip(self.layer, keys[1:], strict=True):
            x = run(layer, x, attention_mask, layer_key)
        return x
