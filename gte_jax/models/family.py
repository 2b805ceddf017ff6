"""What the rest of gte_jax needs to know about a model family, in one small interface.

The encoder, runners, sharding, training, export, int8 and the corpus job never name an
architecture: they ask the checkpoint's :class:`Family` (chosen from ``config.json`` by
:func:`gte_jax.models.family_for`) for its config, module, conversion rules and defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import jax
from flax import nnx
from jax.sharding import PartitionSpec
from jax.typing import DTypeLike

from gte_jax.models.heads import Head
from gte_jax.models.rules import Conversion

# Mesh axis names: rows of a batch split over DATA, a family's param_specs split weights over MODEL.
DATA = "data"
MODEL = "model"


class Encoder(Protocol):
    """The module every family builds: token ids in, last hidden states out."""

    config: Any

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        rngs: nnx.Rngs | jax.Array | None = None,
        remat: bool = False,
    ) -> jax.Array: ...


class BuildModule(Protocol):
    def __call__(
        self, cfg: Any, *, dtype: DTypeLike, act_dtype: DTypeLike | None, attention_impl: str, rngs: nnx.Rngs
    ) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Family:
    """A model architecture as gte_jax runs it.

    Attributes:
        name: the family's name (``"bert"``, ``"gte"``, ``"modernbert"``), its folder in ``gte_jax/models``.
        model_types: the ``config.json`` ``model_type`` values it runs (the hub's and transformers' names).
        read_config: ``(config.json dict, source name) -> config``; raises ``ConfigError`` naming the
            source and field, also for options that change the maths and are not implemented.
        write_config: ``config -> config.json`` for transformers' native class (what export writes).
        build: the NNX module from a config (random weights until loaded).
        conversion: the checkpoint <-> NNX rules, used by loading and export alike.
        param_specs: tensor-parallel partition specs by NNX path regex (``model`` axis); others replicate.
        dense_layers: yields ``(parent, attribute)`` of each dense layer int8 quantisation replaces.
        config_type: the family's config class (how a module's config names its family).
        default_pooling: pooling when the checkpoint has no sentence-transformers files.
        token_types: whether the module reads token-type ids (sentence pairs); otherwise they are not passed.
        head: the sequence-classification head (cross-encoders), or None when gte_jax has none for the family.
    """

    name: str
    model_types: tuple[str, ...]
    read_config: Callable[[dict[str, Any], str], Any]
    write_config: Callable[[Any], dict[str, Any]]
    build: BuildModule
    conversion: Conversion
    param_specs: Sequence[tuple[str, PartitionSpec]]
    dense_layers: Callable[[Any], Iterator[tuple[Any, str]]]
    config_type: type
    default_pooling: str = "mean"
    token_types: bool = True
    head: Head | None = None
