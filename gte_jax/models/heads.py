"""Sequence-classification heads (cross-encoders, rerankers) and the module that puts one on an encoder.

A head takes the encoder's last hidden states and the attention mask and returns ``[B, labels]``
logits, as transformers' ``*ForSequenceClassification`` computes them. Each family names its head
and the head's conversion rules (:attr:`gte_jax.models.family.Family.head`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from gte_jax.models.layers import Einsum
from gte_jax.models.rules import Conversion, Rule


class PoolerClassifier(nnx.Module):
    """BERT's and GTE's head: the first token through ``pooler`` (dense + tanh), dropout, then ``classifier``.

    Args:
        hidden_size: the encoder's width.
        num_labels: logits per input.
        dropout: the classifier dropout rate (train mode only).
    """

    def __init__(self, hidden_size: int, num_labels: int, *, dropout: float, dtype: DTypeLike, rngs: nnx.Rngs):
        self.pooler = Einsum("BD,DE->BE", (hidden_size, hidden_size), (hidden_size,), dtype=dtype, rngs=rngs)
        self.classifier = Einsum("BD,DL->BL", (hidden_size, num_labels), (num_labels,), dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, deterministic=True)

    def __call__(self, hidden: jax.Array, mask: jax.Array, key: jax.Array | None = None) -> jax.Array:
        pooled = jnp.tanh(self.pooler(hidden[:, 0]))  # [B, D]
        return self.classifier(self.dropout(pooled, rngs=key)).astype(jnp.float32)  # [B, L]


def transpose(t: Any, cfg: Any) -> Any:
    return t.T


POOLER_CLASSIFIER_RULES = (
    Rule("pooler.dense.weight", "pooler.kernel", transpose, transpose),
    Rule("pooler.dense.bias", "pooler.bias"),
    Rule("classifier.weight", "classifier.kernel", transpose, transpose),
    Rule("classifier.bias", "classifier.bias"),
)


@dataclasses.dataclass(frozen=True)
class Head:
    """A family's classification head.

    Attributes:
        build: ``(config, num_labels, *, dropout, dtype, rngs) -> module``.
        rules: its conversion rules, Hugging Face keys as in ``*ForSequenceClassification`` (encoder prefix
            stripped where the encoder's keys carry one, e.g. BERT's ``bert.pooler``), NNX paths under the head.
        encoder_prefix: how the ``*ForSequenceClassification`` checkpoint prefixes the encoder's keys.
    """

    build: Callable[..., nnx.Module]
    rules: tuple[Rule, ...]
    encoder_prefix: str


class CrossEncoderModel(nnx.Module):
    """An encoder with a classification head: ``(ids, mask, token types) -> [B, labels]`` float32 logits."""

    def __init__(self, encoder: nnx.Module, head: nnx.Module):
        self.encoder = encoder
        self.head = head
        self.config: Any = encoder.config  # type: ignore[attr-defined]  # every family's module has one

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        rngs: nnx.Rngs | jax.Array | None = None,
    ) -> jax.Array:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, rngs=rngs)
        key = None
        if not getattr(self.encoder, "deterministic", True) and rngs is not None:
            key = rngs.dropout() if isinstance(rngs, nnx.Rngs) else jax.random.fold_in(rngs, 1)
        return self.head(hidden, attention_mask, key)


def cross_encoder_conversion(encoder: Conversion, head: Head) -> Conversion:
    """One table for a ``*ForSequenceClassification`` checkpoint: the encoder's rules under ``encoder.`` and the
    head's under ``head.``; the checkpoint's encoder prefix (``bert.``) is stripped from every key first."""

    def nest(rule: Rule, prefix: str) -> Rule:
        targets = tuple(prefix + t for t in rule.targets)
        return dataclasses.replace(rule, nnx=targets if isinstance(rule.nnx, tuple) else targets[0])

    rules = tuple(nest(r, "encoder.") for r in encoder.rules) + tuple(nest(r, "head.") for r in head.rules)
    prefixes = tuple(dict.fromkeys((head.encoder_prefix, *encoder.prefixes)))
    return Conversion(rules, prefixes=prefixes, ignored=encoder.ignored)
