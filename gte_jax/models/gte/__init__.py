"""GTE v1.5 / multilingual (Alibaba-NLP gte-base-en-v1.5, gte-large-en-v1.5, gte-multilingual-base).

RoPE (static NTK scaling), gated GELU MLP, post-LN; checkpoints in the hub's ``NewModel`` layout
(``model_type: "new"``) or transformers' native ``GteModel`` one (``"gte"``).

``token_types`` is True: gte-large-en-v1.5 (2 types) reads sentence-pair token types; a model
without the table (``type_vocab_size`` 0, gte-base-en-v1.5) ignores the ids, as its reference does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jax.sharding import PartitionSpec as P

from gte_jax.models.family import MODEL, Family
from gte_jax.models.gte.config import GteConfig
from gte_jax.models.gte.modeling import GteModel
from gte_jax.models.gte.params import CONVERSION
from gte_jax.models.heads import POOLER_CLASSIFIER_RULES, Head, PoolerClassifier

# Tensor parallelism (Megatron style): heads and the FFN's inner dimension split; the rest copied.
PARAM_SPECS = (
    (r"self_attn\.(q|k|v)_proj\.kernel$", P(None, MODEL, None)),  # [D, N, H]
    (r"self_attn\.(q|k|v)_proj\.bias$", P(MODEL, None)),  # [N, H]
    (r"self_attn\.o_proj\.kernel$", P(MODEL, None, None)),  # [N, H, D]
    (r"mlp\.(up|gate)_proj\.kernel$", P(None, MODEL)),  # [D, F]
    (r"mlp\.down_proj\.kernel$", P(MODEL, None)),  # [F, D]
)


def _dense_layers(model: GteModel) -> Iterator[tuple[Any, str]]:
    for layer in model.layers:
        yield from ((layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
        yield from ((layer.mlp, n) for n in ("up_proj", "gate_proj", "down_proj"))


FAMILY = Family(
    name="gte",
    model_types=("new", "gte"),
    read_config=GteConfig.from_hf_dict,
    write_config=GteConfig.to_hf_config,
    build=GteModel,
    conversion=CONVERSION,
    param_specs=PARAM_SPECS,
    dense_layers=_dense_layers,
    config_type=GteConfig,
    default_pooling="cls",
    token_types=True,
    head=Head(  # GteForSequenceClassification / the hub's NewForSequenceClassification: BERT's head
        build=lambda cfg, num_labels, *, dtype, rngs: PoolerClassifier(
            cfg.hidden_size, num_labels, dropout=cfg.hidden_dropout_prob, dtype=dtype, rngs=rngs
        ),
        rules=POOLER_CLASSIFIER_RULES,
        encoder_prefix="gte.",
    ),
)

__all__ = ["FAMILY", "GteConfig", "GteModel"]
