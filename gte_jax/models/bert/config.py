"""Model configuration: a frozen dataclass with the GTE presets."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from typing import Any

from gte_jax.errors import ConfigError
from gte_jax.files import read_json_object

# BERT checkpoints we can run: absolute positions, post-LN, exact GELU.
_SUPPORTED_MODEL_TYPES = ("bert",)
_SUPPORTED_ACTIVATIONS = ("gelu",)
# Sizes that must be whole numbers of at least 1.
_SIZES = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class GTEConfig:
    """Shape and numerics of a BERT encoder as used by the GTE models.

    Field names follow Hugging Face's ``BertConfig`` so that ``config.json``
    maps onto this class without a translation table.
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Dropout rates as in BERT; active only in train mode (``model.train()``), never when embedding.
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1

    def __post_init__(self) -> None:
        for name in _SIZES:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} is {value!r}, not a positive integer; fix the config.")
        pad = self.pad_token_id
        if not _is_int(pad) or not 0 <= pad < self.vocab_size:
            raise ConfigError(
                f"pad_token_id is {pad!r}, not an integer from 0 to {self.vocab_size - 1} (vocab_size - 1); "
                "fix the config."
            )
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(eps) and eps > 0):
            raise ConfigError(f"layer_norm_eps is {eps!r}, not a positive number such as 1e-12; fix the config.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
                raise ConfigError(
                    f"{name} is {rate!r}, not a probability from 0 to below 1 (BERT: 0.1); fix the config."
                )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}; fix the config."
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def gte_small(cls) -> GTEConfig:
        return cls(hidden_size=384, num_hidden_layers=12, num_attention_heads=12, intermediate_size=1536)

    @classmethod
    def gte_base(cls) -> GTEConfig:
        return cls(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)

    @classmethod
    def gte_large(cls) -> GTEConfig:
        return cls(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any] | str | os.PathLike) -> GTEConfig:
        """Builds a config from a Hugging Face ``config.json`` (a dict or its path).

        Raises:
            ConfigError: the file is missing or not a JSON object, a field has a wrong
                type or value, or the checkpoint is not a BERT encoder this module can run;
                the message names the file and the field.
        """
        source = "config"
        if not isinstance(hf, dict):
            source = os.fspath(hf)
            hf = read_json_object(source)
        return cls.from_hf_dict(hf, source)

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], source: str = "config") -> GTEConfig:
        """:meth:`from_hf_config` for a ``config.json`` already read; ``source`` names it in errors."""
        model_type = hf.get("model_type", "bert")
        if model_type not in _SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"{source}: model_type {model_type!r} is not supported; gte_jax runs BERT encoders "
                f"({', '.join(_SUPPORTED_MODEL_TYPES)}) such as thenlper/gte-small."
            )
        act = hf.get("hidden_act", "gelu")
        if act not in _SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"{source}: hidden_act {act!r} is not supported; expected exact 'gelu' as in BERT.")
        pos = hf.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise ConfigError(f"{source}: position_embedding_type {pos!r} is not supported; expected 'absolute'.")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in hf.items() if k in names and v is not None})
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf_config(self) -> dict[str, Any]:
        """The ``config.json`` a Hugging Face ``BertModel`` loads with the same shapes."""
        return {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_act": "gelu",
            "position_embedding_type": "absolute",
            **dataclasses.asdict(self),
        }
