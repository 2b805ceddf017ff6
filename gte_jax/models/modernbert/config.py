"""ModernBERT's settings, read from either ``config.json`` style, and written back for transformers.

transformers 5 writes ``layer_types`` and ``rope_parameters`` (one RoPE per layer type); older
configs (and the hub's gte-modernbert-base) say ``global_attn_every_n_layers``,
``global_rope_theta`` and ``local_rope_theta``. Both read into one :class:`ModernBertConfig`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable
from typing import Any

import jax

from gte_jax.errors import ConfigError
from gte_jax.models.layers import gelu

FULL, SLIDING = "full_attention", "sliding_attention"
# hidden_activation -> the function transformers' ACT2FN gives that name: "gelu" is the exact (erf) GELU,
# "gelu_pytorch_tanh" and "gelu_new" its tanh approximation.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": gelu,
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "relu": jax.nn.relu,
}
_SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
_RATES = ("embedding_dropout", "attention_dropout", "mlp_dropout")
_TOKENS = ("pad_token_id", "cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id")
# config.json fields read as they are (the rest are derived, or only matter to heads embedding never runs).
_FIELDS = (
    *_SIZES,
    "max_position_embeddings",
    "hidden_activation",
    "norm_eps",
    "norm_bias",
    "attention_bias",
    "mlp_bias",
    "local_attention",
    "classifier_pooling",
    "classifier_bias",
    "classifier_activation",
    "classifier_dropout",
    *_RATES,
    *_TOKENS,
)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """Shapes and numerics of a ModernBERT encoder (gte-modernbert-base: 22 x 768, 12 heads, 8,192 tokens).

    Field names follow transformers' ``ModernBertConfig``; ``layer_types`` is resolved (one entry per
    layer) and the RoPE bases are the two floats the maths needs.
    """

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    max_position_embeddings: int = 8192
    hidden_activation: str = "gelu"
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    layer_types: tuple[str, ...] = ()  # empty: a global layer every 3, as transformers' default
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    local_attention: int = 128
    classifier_pooling: str = "cls"
    # The sequence-classification head (rerankers): dense -> activation -> LayerNorm -> dropout -> classifier.
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    classifier_dropout: float = 0.0
    # Dropout rates (ModernBERT trains with none); active only in train mode, never when embedding.
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    mlp_dropout: float = 0.0
    pad_token_id: int | None = 50283
    cls_token_id: int | None = 50281
    sep_token_id: int | None = 50282
    bos_token_id: int | None = 50281
    eos_token_id: int | None = 50282

    def __post_init__(self) -> None:
        for name in (*_SIZES, "max_position_embeddings", "local_attention"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} is {value!r}, not a positive integer; fix the config.")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; fix the config."
            )
        if self.hidden_activation not in ACTIVATIONS:
            raise ConfigError(
                f"hidden_activation {self.hidden_activation!r} is not supported; use one of {', '.join(ACTIVATIONS)}."
            )
        if not _is_real(self.norm_eps) or self.norm_eps <= 0:
            raise ConfigError(f"norm_eps is {self.norm_eps!r}, not a positive number such as 1e-5; fix the config.")
        for name in ("norm_bias", "attention_bias", "mlp_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} is {getattr(self, name)!r}, not true or false; fix the config.")
        types = self.layer_types or every_n_layers(self.num_hidden_layers, 3)
        if len(types) != self.num_hidden_layers or any(t not in (FULL, SLIDING) for t in types):
            raise ConfigError(
                f"layer_types is {list(self.layer_types)!r}; expected {self.num_hidden_layers} entries "
                f"(num_hidden_layers), each {FULL!r} or {SLIDING!r}."
            )
        object.__setattr__(self, "layer_types", tuple(types))
        for name in ("global_rope_theta", "local_rope_theta"):
            if not _is_real(getattr(self, name)) or getattr(self, name) <= 0:
                raise ConfigError(f"{name} is {getattr(self, name)!r}, not a positive number; fix the config.")
        if self.classifier_activation not in ACTIVATIONS:
            raise ConfigError(
                f"classifier_activation {self.classifier_activation!r} is not supported; use one of "
                f"{', '.join(ACTIVATIONS)}."
            )
        if self.classifier_pooling not in ("cls", "mean"):
            raise ConfigError(f"classifier_pooling is {self.classifier_pooling!r}; expected 'cls' or 'mean'.")
        for name in _RATES:
            rate = getattr(self, name)
            if not _is_real(rate) or not 0 <= rate < 1:
                raise ConfigError(f"{name} is {rate!r}, not a probability from 0 to below 1; fix the config.")
        for name in _TOKENS:
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 0 <= value < self.vocab_size):
                raise ConfigError(
                    f"{name} is {value!r}, not a token id from 0 to {self.vocab_size - 1} (vocab_size - 1); "
                    "fix the config."
                )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def is_global(self, layer: int) -> bool:
        """Whether layer ``layer`` attends over the whole input (else a window of ``local_attention`` tokens)."""
        return self.layer_types[layer] == FULL

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], source: str = "config") -> ModernBertConfig:
        """Reads transformers' ``ModernBertConfig`` JSON, either style.

        Raises:
            ConfigError: a field has a wrong type or value, or asks for maths not implemented here
                (RoPE scaling, other layer types, other activations); the message names ``source`` and the field.
        """
        try:
            return cls._from_hf_dict(hf)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def _from_hf_dict(cls, hf: dict[str, Any]) -> ModernBertConfig:
        if hf.get("model_type", "modernbert") != "modernbert":
            raise ConfigError(f"model_type is {hf.get('model_type')!r}; this is the ModernBERT family ('modernbert').")
        if hf.get("rope_scaling") is not None:
            raise ConfigError(f"rope_scaling {hf['rope_scaling']!r} is not supported; ModernBERT uses plain RoPE.")
        fields: dict[str, Any] = {k: hf[k] for k in _FIELDS if k in hf and (hf[k] is not None or k in _TOKENS)}
        if hf.get("layer_types") is not None:
            if not isinstance(hf["layer_types"], list):
                raise ConfigError(f"layer_types is {hf['layer_types']!r}, not a list; fix the config.")
            fields["layer_types"] = tuple(hf["layer_types"])
        else:
            n = hf.get("global_attn_every_n_layers", 3)
            if not _is_int(n) or n < 1:
                raise ConfigError(f"global_attn_every_n_layers is {n!r}, not a positive integer; fix the config.")
            fields["layer_types"] = every_n_layers(hf.get("num_hidden_layers", cls.num_hidden_layers), n)
        for kind, name in ((FULL, "global_rope_theta"), (SLIDING, "local_rope_theta")):
            theta = _rope_theta(hf, kind, name)
            if theta is not None:
                fields[name] = theta
        return cls(**fields)

    def to_hf_config(self) -> dict[str, Any]:
        """The ``config.json`` transformers' ``ModernBertModel`` loads with the same maths, in both styles
        (``layer_types`` / ``rope_parameters`` for transformers 5, the older fields where they can say it)."""
        hf: dict[str, Any] = {
            "architectures": ["ModernBertModel"],
            "model_type": "modernbert",
            **{name: getattr(self, name) for name in _FIELDS},
            "layer_types": list(self.layer_types),
            "rope_parameters": {
                FULL: {"rope_type": "default", "rope_theta": self.global_rope_theta},
                SLIDING: {"rope_type": "default", "rope_theta": self.local_rope_theta},
            },
            "global_rope_theta": self.global_rope_theta,
            "local_rope_theta": self.local_rope_theta,
        }
        for n in range(1, self.num_hidden_layers + 1):
            if every_n_layers(self.num_hidden_layers, n) == self.layer_types:
                hf["global_attn_every_n_layers"] = n
                break
        return hf


def every_n_layers(layers: int, n: int) -> tuple[str, ...]:
    """ModernBERT's layer pattern: layer ``i`` is global when ``i % n == 0``, else sliding-window."""
    return tuple(FULL if i % n == 0 else SLIDING for i in range(layers))


def _rope_theta(hf: dict[str, Any], kind: str, old_name: str) -> float | None:
    """The RoPE base of one layer type: ``rope_parameters[kind]`` (transformers 5) or the older field.

    Raises:
        ConfigError: the entry asks for a RoPE other than the default one, or is malformed.
    """
    params = hf.get("rope_parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise ConfigError(f"rope_parameters is {params!r}, not an object per layer type; fix the config.")
        entry = params.get(kind)
        if entry is not None:
            if not isinstance(entry, dict):
                raise ConfigError(f"rope_parameters.{kind} is {entry!r}, not an object; fix the config.")
            rope_type = entry.get("rope_type", entry.get("type", "default"))
            if rope_type != "default":
                raise ConfigError(
                    f"rope_parameters.{kind}.rope_type {rope_type!r} is not supported; only 'default' RoPE is."
                )
            if entry.get("partial_rotary_factor", 1.0) != 1.0:
                raise ConfigError(
                    f"rope_parameters.{kind}.partial_rotary_factor {entry['partial_rotary_factor']!r} is not "
                    "supported; RoPE here rotates the whole head."
                )
            if entry.get("rope_theta") is not None:
                return entry["rope_theta"]
    return hf.get(old_name)
