"""BERT (thenlper/gte-small, -base, -large; all-MiniLM; bge): absolute positions, post-LN, GELU MLP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jax.sharding import PartitionSpec as P

from gte_jax.models.bert.config import GTEConfig
from gte_jax.models.bert.modeling import BertModel
from gte_jax.models.bert.params import CONVERSION
from gte_jax.models.family import MODEL, Family
from gte_jax.models.heads import POOLER_CLASSIFIER_RULES, Head, PoolerClassifier

# Tensor parallelism (Megatron style): heads and the FFN's inner dimension split; the rest copied.
PARAM_SPECS = (
    (r"attention\.(query|key|value)\.kernel$", P(None, MODEL, None)),  # [D, N, H]
    (r"attention\.(query|key|value)\.bias$", P(MODEL, None)),  # [N, H]
    (r"attention\.output\.kernel$", P(MODEL, None, None)),  # [N, H, D]
    (r"intermediate\.kernel$", P(None, MODEL)),  # [D, F]
    (r"intermediate\.bias$", P(MODEL)),  # [F]
    (r"\d+\.output\.kernel$", P(MODEL, None)),  # [F, D]
)


def _dense_layers(model: BertModel) -> Iterator[tuple[Any, str]]:
    for layer in model.layer:
        yield from ((layer.attention, n) for n in ("query", "key", "value", "output"))
        yield from ((layer, n) for n in ("intermediate", "output"))


FAMILY = Family(
    name="bert",
    model_types=("bert",),
    read_config=GTEConfig.from_hf_dict,
    write_config=GTEConfig.to_hf_config,
    build=BertModel,
    conversion=CONVERSION,
    param_specs=PARAM_SPECS,
    dense_layers=_dense_layers,
    config_type=GTEConfig,
    default_pooling="mean",
    token_types=True,
    head=Head(
        build=lambda cfg, num_labels, *, dtype, rngs: PoolerClassifier(
            cfg.hidden_size, num_labels, dropout=cfg.hidden_dropout_prob, dtype=dtype, rngs=rngs
        ),
        rules=POOLER_CLASSIFIER_RULES,
        encoder_prefix="bert.",
    ),
)
