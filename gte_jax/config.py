"""Model configuration: a frozen dataclass with the GTE presets."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

# BERT checkpoints we can run: absolute positions, post-LN, exact GELU.
_SUPPORTED_MODEL_TYPES = ("bert",)
_SUPPORTED_ACTIVATIONS = ("gelu",)


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

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
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
            ValueError: the checkpoint is not a BERT encoder this module can run.
        """
        source = "config"
        if not isinstance(hf, dict):
            source = os.fspath(hf)
            with open(source, encoding="utf-8") as f:
                hf = json.load(f)
        model_type = hf.get("model_type", "bert")
        if model_type not in _SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"{source}: model_type {model_type!r} is not supported; gte_jax runs BERT encoders "
                f"({', '.join(_SUPPORTED_MODEL_TYPES)}) such as thenlper/gte-small."
            )
        act = hf.get("hidden_act", "gelu")
        if act not in _SUPPORTED_ACTIVATIONS:
            raise ValueError(f"{source}: hidden_act {act!r} is not supported; expected exact 'gelu' as in BERT.")
        pos = hf.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise ValueError(f"{source}: position_embedding_type {pos!r} is not supported; expected 'absolute'.")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hf.items() if k in names and v is not None})

    def to_hf_config(self) -> dict[str, Any]:
        """The ``config.json`` a Hugging Face ``BertModel`` loads with the same shapes."""
        return {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_act": "gelu",
            "position_embedding_type": "absolute",
            **dataclasses.asdict(self),
        }
