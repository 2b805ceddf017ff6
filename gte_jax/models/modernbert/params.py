"""ModernBERT checkpoint keys <-> NNX paths of :class:`~gte_jax.models.modernbert.modeling.ModernBertModel`.

The NNX tree mirrors transformers' names (``layers.{i}.attn.Wqkv``, ``mlp.Wi``, ...). The fused
tensors stay fused, one parameter each, with the fused part as its own axis: ``Wqkv`` is a
``[D, 3, N, H]`` kernel and ``Wi`` a ``[D, 2, F]`` one. So every rule is a plain reshape both
ways, export writes transformers' own tensors, int8 quantises each as one dense layer, and
tensor parallelism splits the head (``N``) or inner (``F``) axis of both parts alike.
"""

from __future__ import annotations

import numpy as np

from gte_jax.models.modernbert.config import ModernBertConfig
from gte_jax.models.rules import Conversion, Rule, transpose


def qkv_kernel(t: np.ndarray, cfg: ModernBertConfig) -> np.ndarray:  # [3*N*H, D] -> [D, 3, N, H]
    return t.T.reshape(cfg.hidden_size, 3, cfg.num_attention_heads, cfg.head_dim)


def qkv_kernel_inv(t: np.ndarray, cfg: ModernBertConfig) -> np.ndarray:  # [D, 3, N, H] -> [3*N*H, D]
    return t.reshape(cfg.hidden_size, -1).T


def qkv_bias(t: np.ndarray, cfg: ModernBertConfig) -> np.ndarray:  # [3*N*H] -> [3, N, H]
    return t.reshape(3, cfg.num_attention_heads, cfg.head_dim)


def flat(t: np.ndarray, cfg: ModernBertConfig) -> np.ndarray:  # any -> 1-D, the inverse of the bias reshapes
    return t.reshape(-1)


def attn_out_kernel(t: np.ndarray, cfg: ModernBertConfig) -> np.ndarray:  # [D, N*H] -> [N, H, D]
    return t.T.reshape(cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size)


def attn_out_kernel_inv(t: np.ndarray, cfg: ModernBertConfig) -> np.ndarray:  # [N, H, D] -> [D, N*H]
    return t.reshape(-1, cfg.hidden_size).T


def wi_kernel(t: np.ndarray, cfg: ModernBertConfig) -> np.ndarray:  # [2*F, D] -> [D, 2, F]: input half, gate half
    return t.T.reshape(cfg.hidden_size, 2, cfg.intermediate_size)


def wi_kernel_inv(t: np.ndarray, cfg: ModernBertConfig) -> np.ndarray:  # [D, 2, F] -> [2*F, D]
    return t.reshape(cfg.hidden_size, -1).T


def wi_bias(t: np.ndarray, cfg: ModernBertConfig) -> np.ndarray:  # [2*F] -> [2, F]
    return t.reshape(2, cfg.intermediate_size)


_L = "layers.{i}."

RULES = (
    Rule("embeddings.tok_embeddings.weight", "embeddings.tok_embeddings.embedding"),
    Rule("embeddings.norm.weight", "embeddings.norm.scale"),
    Rule("embeddings.norm.bias", "embeddings.norm.bias"),
    Rule(_L + "attn_norm.weight", "layers.{i}.attn_norm.scale"),  # layer 0 has none (transformers' Identity)
    Rule(_L + "attn_norm.bias", "layers.{i}.attn_norm.bias"),
    Rule(_L + "attn.Wqkv.weight", "layers.{i}.attn.Wqkv.kernel", qkv_kernel, qkv_kernel_inv),
    Rule(_L + "attn.Wqkv.bias", "layers.{i}.attn.Wqkv.bias", qkv_bias, flat),
    Rule(_L + "attn.Wo.weight", "layers.{i}.attn.Wo.kernel", attn_out_kernel, attn_out_kernel_inv),
    Rule(_L + "attn.Wo.bias", "layers.{i}.attn.Wo.bias"),
    Rule(_L + "mlp_norm.weight", "layers.{i}.mlp_norm.scale"),
    Rule(_L + "mlp_norm.bias", "layers.{i}.mlp_norm.bias"),
    Rule(_L + "mlp.Wi.weight", "layers.{i}.mlp.Wi.kernel", wi_kernel, wi_kernel_inv),
    Rule(_L + "mlp.Wi.bias", "layers.{i}.mlp.Wi.bias", wi_bias, flat),
    Rule(_L + "mlp.Wo.weight", "layers.{i}.mlp.Wo.kernel", transpose, transpose),
    Rule(_L + "mlp.Wo.bias", "layers.{i}.mlp.Wo.bias"),
    Rule("final_norm.weight", "final_norm.scale"),
    Rule("final_norm.bias", "final_norm.bias"),
)

CONVERSION = Conversion(
    RULES,
    prefixes=("model.",),  # ModernBertForMaskedLM / ForSequenceClassification / ... hold the encoder as `model`
    ignored=(
        r"^head\.",  # the masked-LM prediction head
        r"^decoder\.",  # the masked-LM decoder (tied to the token embeddings)
        r"^(drop|classifier)\.",  # sequence / token classification heads
    ),
)
