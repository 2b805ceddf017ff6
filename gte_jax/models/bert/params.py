"""BERT checkpoint keys <-> NNX paths of :class:`~gte_jax.models.bert.modeling.BertModel`, both ways from one table."""

from __future__ import annotations

import numpy as np

from gte_jax.models.bert.config import GTEConfig
from gte_jax.models.rules import Conversion, Rule, transpose


def qkv_kernel(t: np.ndarray, cfg: GTEConfig) -> np.ndarray:  # [N*H, D] -> [D, N, H]
    return t.T.reshape(cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim)


def qkv_kernel_inv(t: np.ndarray, cfg: GTEConfig) -> np.ndarray:  # [D, N, H] -> [N*H, D]
    return t.reshape(cfg.hidden_size, -1).T


def heads(t: np.ndarray, cfg: GTEConfig) -> np.ndarray:  # [N*H] -> [N, H]
    return t.reshape(cfg.num_attention_heads, cfg.head_dim)


def heads_inv(t: np.ndarray, cfg: GTEConfig) -> np.ndarray:  # [N, H] -> [N*H]
    return t.reshape(-1)


def attn_out_kernel(t: np.ndarray, cfg: GTEConfig) -> np.ndarray:  # [D, N*H] -> [N, H, D]
    return t.T.reshape(cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size)


def attn_out_kernel_inv(t: np.ndarray, cfg: GTEConfig) -> np.ndarray:  # [N, H, D] -> [D, N*H]
    return t.reshape(-1, cfg.hidden_size).T


_L = "encoder.layer.{i}."
_QKV = "attention.self.{p:query|key|value}"
_SCALE = "[weight|gamma]"  # old TF-converted checkpoints say gamma/beta
_BIAS = "[bias|beta]"

RULES = (
    Rule("embeddings.word_embeddings.weight", "embeddings.word_embeddings.embedding"),
    Rule("embeddings.position_embeddings.weight", "embeddings.position_embeddings.embedding"),
    Rule("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.embedding"),
    Rule(f"embeddings.LayerNorm.{_SCALE}", "embeddings.LayerNorm.scale"),
    Rule(f"embeddings.LayerNorm.{_BIAS}", "embeddings.LayerNorm.bias"),
    Rule(
        _L + "attention.self.{p:query|key|value}.weight", "layer.{i}.attention.{p}.kernel", qkv_kernel, qkv_kernel_inv
    ),
    Rule(_L + "attention.self.{p:query|key|value}.bias", "layer.{i}.attention.{p}.bias", heads, heads_inv),
    Rule(
        _L + "attention.output.dense.weight", "layer.{i}.attention.output.kernel", attn_out_kernel, attn_out_kernel_inv
    ),
    Rule(_L + "attention.output.dense.bias", "layer.{i}.attention.output.bias"),
    Rule(_L + f"attention.output.LayerNorm.{_SCALE}", "layer.{i}.attention_LayerNorm.scale"),
    Rule(_L + f"attention.output.LayerNorm.{_BIAS}", "layer.{i}.attention_LayerNorm.bias"),
    Rule(_L + "intermediate.dense.weight", "layer.{i}.intermediate.kernel", transpose, transpose),
    Rule(_L + "intermediate.dense.bias", "layer.{i}.intermediate.bias"),
    Rule(_L + "output.dense.weight", "layer.{i}.output.kernel", transpose, transpose),
    Rule(_L + "output.dense.bias", "layer.{i}.output.bias"),
    Rule(_L + f"output.LayerNorm.{_SCALE}", "layer.{i}.output_LayerNorm.scale"),
    Rule(_L + f"output.LayerNorm.{_BIAS}", "layer.{i}.output_LayerNorm.bias"),
)

CONVERSION = Conversion(
    RULES,
    prefixes=("bert.",),
    ignored=(
        r"^(bert\.)?embeddings\.position_ids$",
        r"^(bert\.)?pooler\.",  # embedding never reads the pooler; export carries it over from the source
        r"^cls\.",  # masked-LM / next-sentence heads
    ),
)
