"""GTE checkpoint keys <-> NNX paths of :class:`~gte_jax.models.gte.modeling.GteModel`, both ways from one table.

transformers' native keys (``layers.{i}.self_attn.q_proj``, ...) load and export. The hub's
``NewModel`` keys (``encoder.layer.{i}.attention.qkv_proj``, fused ``[q; k; v]``, and
``mlp.up_gate_proj``, fused ``[up; gate]``) load only, as transformers' own conversion reads them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gte_jax.models.bert.params import (
    attn_out_kernel,
    attn_out_kernel_inv,
    heads,
    heads_inv,
    qkv_kernel,
    qkv_kernel_inv,
)
from gte_jax.models.rules import Conversion, Rule, transpose


def split_qkv_kernel(t: np.ndarray, cfg: Any) -> tuple[np.ndarray, ...]:  # [3*N*H, D] -> 3 x [D, N, H]
    return tuple(qkv_kernel(part, cfg) for part in np.split(t, 3, axis=0))


def split_qkv_bias(t: np.ndarray, cfg: Any) -> tuple[np.ndarray, ...]:  # [3*N*H] -> 3 x [N, H]
    return tuple(heads(part, cfg) for part in np.split(t, 3, axis=0))


def split_up_gate(t: np.ndarray, cfg: Any) -> tuple[np.ndarray, ...]:  # [2*F, D] -> [D, F] (up), [D, F] (gate)
    return tuple(part.T for part in np.split(t, 2, axis=0))


_L = "layers.{i}."  # transformers' native layer prefix, and the NNX one
_HUB = "encoder.layer.{i}."
_Q, _K, _V = (_L + f"self_attn.{p}_proj" for p in "qkv")

RULES = (
    # transformers' GteModel: loaded and exported.
    Rule("embeddings.word_embeddings.weight", "embeddings.word_embeddings.embedding"),
    Rule("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.embedding"),
    Rule("embeddings.LayerNorm.weight", "embeddings.LayerNorm.scale"),
    Rule("embeddings.LayerNorm.bias", "embeddings.LayerNorm.bias"),
    Rule(_L + "self_attn.{p:q|k|v}_proj.weight", _L + "self_attn.{p}_proj.kernel", qkv_kernel, qkv_kernel_inv),
    Rule(_L + "self_attn.{p:q|k|v}_proj.bias", _L + "self_attn.{p}_proj.bias", heads, heads_inv),
    Rule(_L + "self_attn.o_proj.weight", _L + "self_attn.o_proj.kernel", attn_out_kernel, attn_out_kernel_inv),
    Rule(_L + "self_attn.o_proj.bias", _L + "self_attn.o_proj.bias"),
    Rule(_L + "post_attention_layernorm.weight", _L + "post_attention_layernorm.scale"),
    Rule(_L + "post_attention_layernorm.bias", _L + "post_attention_layernorm.bias"),
    Rule(_L + "mlp.{p:up|gate|down}_proj.weight", _L + "mlp.{p}_proj.kernel", transpose, transpose),
    Rule(_L + "mlp.down_proj.bias", _L + "mlp.down_proj.bias"),
    Rule(_L + "post_mlp_layernorm.weight", _L + "post_mlp_layernorm.scale"),
    Rule(_L + "post_mlp_layernorm.bias", _L + "post_mlp_layernorm.bias"),
    # The hub's NewModel: loaded only (export writes the native keys above).
    Rule(
        _HUB + "attention.qkv_proj.weight",
        (_Q + ".kernel", _K + ".kernel", _V + ".kernel"),
        split_qkv_kernel,
        load_only=True,
    ),
    Rule(_HUB + "attention.qkv_proj.bias", (_Q + ".bias", _K + ".bias", _V + ".bias"), split_qkv_bias, load_only=True),
    Rule(
        _HUB + "attention.{p:q|k|v}_proj.weight", _L + "self_attn.{p}_proj.kernel", qkv_kernel, load_only=True
    ),  # pack_qkv false
    Rule(_HUB + "attention.{p:q|k|v}_proj.bias", _L + "self_attn.{p}_proj.bias", heads, load_only=True),
    Rule(_HUB + "attention.o_proj.weight", _L + "self_attn.o_proj.kernel", attn_out_kernel, load_only=True),
    Rule(_HUB + "attention.o_proj.bias", _L + "self_attn.o_proj.bias", load_only=True),
    Rule(_HUB + "attn_ln.weight", _L + "post_attention_layernorm.scale", load_only=True),
    Rule(_HUB + "attn_ln.bias", _L + "post_attention_layernorm.bias", load_only=True),
    Rule(
        _HUB + "mlp.up_gate_proj.weight",
        (_L + "mlp.up_proj.kernel", _L + "mlp.gate_proj.kernel"),
        split_up_gate,
        load_only=True,
    ),
    Rule(_HUB + "mlp.down_proj.weight", _L + "mlp.down_proj.kernel", transpose, load_only=True),
    Rule(_HUB + "mlp.down_proj.bias", _L + "mlp.down_proj.bias", load_only=True),
    Rule(_HUB + "mlp_ln.weight", _L + "post_mlp_layernorm.scale", load_only=True),
    Rule(_HUB + "mlp_ln.bias", _L + "post_mlp_layernorm.bias", load_only=True),
)

_PREFIX = r"^(new\.|gte\.)?"
CONVERSION = Conversion(
    RULES,
    # NewFor*/GteFor* classes (masked LM, token and sequence classification) hold the encoder under one.
    prefixes=("new.", "gte."),
    ignored=(
        _PREFIX + r"embeddings\.position_ids$",
        _PREFIX + r"(embeddings\.)?rotary_emb\.",  # RoPE caches some hub exports carry
        _PREFIX + r"pooler\.",  # embedding never reads the pooler or heads (a reranker would)
        r"^lm_head\.",
        r"^classifier\.",
    ),
)
