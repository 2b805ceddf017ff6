"""ModernBERT (Alibaba-NLP/gte-modernbert-base, answerdotai/ModernBERT-*): pre-norm, rotary positions,
alternating global and sliding-window attention, GeGLU MLP, no biases, CLS pooling, 8,192 tokens."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jax.sharding import PartitionSpec as P

from gte_jax.models.family import MODEL, Family
from gte_jax.models.heads import Head
from gte_jax.models.modernbert.config import ModernBertConfig
from gte_jax.models.modernbert.modeling import ClassifierHead, ModernBertModel
from gte_jax.models.modernbert.params import CONVERSION
from gte_jax.models.rules import Rule, transpose

# Tensor parallelism (Megatron style): the heads and the MLP's inner dimension split, in both parts of
# the fused Wqkv [D, 3, N, H] and Wi [D, 2, F] alike; embeddings and LayerNorms copied.
PARAM_SPECS = (
    (r"attn\.Wqkv\.kernel$", P(None, None, MODEL, None)),  # [D, 3, N, H]
    (r"attn\.Wqkv\.bias$", P(None, MODEL, None)),  # [3, N, H]
    (r"attn\.Wo\.kernel$", P(MODEL, None, None)),  # [N, H, D]
    (r"mlp\.Wi\.kernel$", P(None, None, MODEL)),  # [D, 2, F]
    (r"mlp\.Wi\.bias$", P(None, MODEL)),  # [2, F]
    (r"mlp\.Wo\.kernel$", P(MODEL, None)),  # [F, D]
)


def _dense_layers(model: ModernBertModel) -> Iterator[tuple[Any, str]]:
    for layer in model.layers:
        yield from ((layer.attn, n) for n in ("Wqkv", "Wo"))
        yield from ((layer.mlp, n) for n in ("Wi", "Wo"))


FAMILY = Family(
    name="modernbert",
    model_types=("modernbert",),
    read_config=ModernBertConfig.from_hf_dict,
    write_config=ModernBertConfig.to_hf_config,
    build=ModernBertModel,
    conversion=CONVERSION,
    param_specs=PARAM_SPECS,
    dense_layers=_dense_layers,
    config_type=ModernBertConfig,
    default_pooling="cls",
    token_types=False,
    head=Head(
        build=lambda cfg, num_labels, *, dtype, rngs: ClassifierHead(cfg, num_labels, dtype=dtype, rngs=rngs),
        rules=(
            Rule("head.dense.weight", "dense.kernel", transpose, transpose),
            Rule("head.dense.bias", "dense.bias"),
            Rule("head.norm.weight", "norm.scale"),
            Rule("head.norm.bias", "norm.bias"),
            Rule("classifier.weight", "classifier.kernel", transpose, transpose),
            Rule("classifier.bias", "classifier.bias"),
        ),
        encoder_prefix="model.",
    ),
)
