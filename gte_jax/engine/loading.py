"""Loading a checkpoint: the model directory's files into a sharded NNX model, its tokenizer and its
sentence-transformers settings (pooling, prompts, similarity function)."""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
from jax.sharding import Mesh

from gte_jax.checkpoints.hub import resolve_model_dir
from gte_jax.checkpoints.params import check_vocab, find_weights, load_model
from gte_jax.checkpoints.sentence_config import SentenceConfig, read_sentence_config
from gte_jax.engine import sharding
from gte_jax.engine.cpu_features import warn_if_slow
from gte_jax.engine.dtypes import DTYPES
from gte_jax.engine.tokenization import Tokenizer
from gte_jax.kernels.attention import default_impl
from gte_jax.models import read_config
from gte_jax.models.bert.modeling import BertModel
from gte_jax.models.family import Family
from gte_jax.models.int8 import quantize_linear
from gte_jax.models.layers import default_act_dtype

_PARAM_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "int8": jnp.float32}


@dataclasses.dataclass(frozen=True)
class Loaded:
    """What a model directory gives: the model (placed on ``mesh``), its tokenizer and its
    sentence-transformers settings."""

    model: BertModel
    tokenizer: Tokenizer
    sentence: SentenceConfig
    model_dir: str
    family: Family

    @property
    def pooling(self) -> str:
        return self.sentence.pooling


def load(
    name_or_path: str,
    *,
    mesh: Mesh,
    dtype: str = "float32",
    max_length: int | None = None,
    attention_impl: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    num_labels: int | None = None,
) -> Loaded:
    """Loads a BERT embedding model; see :meth:`gte_jax.GTEEncoder.from_pretrained` for the arguments.

    Raises:
        ModelNotFoundError: no such directory and the Hub cannot provide it.
        ConfigError: ``config.json`` is malformed or not a BERT encoder this module runs, or the
            sentence-transformers files name a module or pooling this package does not run.
        CheckpointError: the weights do not fit the config, or the tokenizer's ids do not fit the embedding table.
        ValueError: a bad ``dtype`` or ``max_length``.

    With ``num_labels`` the checkpoint is a sequence classifier (a cross-encoder): the model is a
    :class:`~gte_jax.models.heads.CrossEncoderModel` with the family's head.
    """
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of the names {DTYPES}.")
    model_dir = resolve_model_dir(name_or_path, revision=revision, cache_dir=cache_dir)
    family, config = read_config(model_dir)
    # before the weights: an unsupported module fails fast
    sentence = read_sentence_config(model_dir, config.hidden_size, default_pooling=family.default_pooling)
    limit = config.max_position_embeddings
    if max_length is None:
        max_length = min(sentence.max_seq_length or limit, limit)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= limit:
        raise ValueError(f"max_length {max_length!r} is out of range; {name_or_path} accepts 2 to {limit} tokens.")
    weights = find_weights(model_dir)
    tokenizer = Tokenizer.from_dir(model_dir, max_length, default_pad_id=config.pad_token_id)
    check_vocab(tokenizer.vocab_size, config, model_dir)  # before the weights: an id past the table gives NaN
    platform = mesh.devices.flat[0].platform
    if platform == "cpu":
        warn_if_slow(dtype)
    model = load_model(
        weights,
        config,
        dtype=_PARAM_DTYPES[dtype],
        act_dtype=default_act_dtype(_PARAM_DTYPES[dtype], platform),
        attention_impl=attention_impl or default_impl(platform),
        sharding=functools.partial(sharding.param_sharding, mesh, specs=family.param_specs),
        family=family,
        num_labels=num_labels,
    )
    if dtype == "int8":
        quantize_linear(model if num_labels is None else model.encoder)
    return Loaded(model, tokenizer, sentence, model_dir, family)
