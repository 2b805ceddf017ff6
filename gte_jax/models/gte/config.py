"""The GTE v1.5 / multilingual config (Alibaba-NLP ``NewModel``; transformers' ``GteModel``).

Read from ``config.json`` as the hub has it (``model_type: "new"``, ``rope_theta`` and ``rope_scaling``
``{"type": "ntk", "factor": F}``) or as transformers writes it (``model_type: "gte"``, ``rope_parameters``);
written in transformers' form, which its ``GteModel`` loads without ``trust_remote_code``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

from gte_jax.errors import ConfigError

# hidden_act -> whether it is GELU's tanh approximation (False: the exact erf form), as transformers' ACT2FN has them.
ACTIVATIONS = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}

_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
# The hub's NewConfig defaults where they differ from transformers' GteConfig (this class's defaults).
_NEW_DEFAULTS = {
    "vocab_size": 30528,
    "max_position_embeddings": 512,
    "type_vocab_size": 0,
    "pad_token_id": 0,
    "rope_theta": 10000.0,
}
_GTE_DEFAULT_THETA = 160000.0


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class GteConfig:
    """Shapes and numerics of a GTE v1.5 encoder (RoPE, gated GELU MLP, post-LN).

    Attributes:
        rope_theta: the RoPE base as the hub's config gives it.
        rope_ntk_factor: the hub's static NTK scaling ``F`` (1: none): base ``theta * F`` and every
            inverse frequency divided by ``F ** (2 / head_dim)``, i.e. transformers' ``linear`` rope of
            ``theta * F`` with factor ``F ** (2 / head_dim)`` (:meth:`rope_parameters`).
        type_vocab_size: 0 for a model without token-type embeddings (gte-base-en-v1.5).
    """

    vocab_size: int = 250048
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 8192
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 1
    rope_theta: float = _GTE_DEFAULT_THETA
    rope_ntk_factor: float = 1.0
    # Active only in train mode (``model.train()``), never when embedding.
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in _SIZES:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} is {value!r}, not a positive integer; fix the config.")
        if not _is_int(self.type_vocab_size) or self.type_vocab_size < 0:
            raise ConfigError(f"type_vocab_size is {self.type_vocab_size!r}, not an integer of 0 or more.")
        if not _is_int(self.max_position_embeddings) or self.max_position_embeddings < 1:
            raise ConfigError(
                f"max_position_embeddings is {self.max_position_embeddings!r}, not a positive integer; fix the config."
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"hidden_act {self.hidden_act!r} is not supported; gte_jax runs {', '.join(ACTIVATIONS)}."
            )
        pad = self.pad_token_id
        if not _is_int(pad) or not 0 <= pad < self.vocab_size:
            raise ConfigError(f"pad_token_id is {pad!r}, not an integer from 0 to {self.vocab_size - 1}.")
        if not _is_real(self.layer_norm_eps) or self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps is {self.layer_norm_eps!r}, not a positive number such as 1e-12.")
        if not _is_real(self.rope_theta) or self.rope_theta <= 1:
            raise ConfigError(f"rope_theta is {self.rope_theta!r}, not a number above 1 such as 160000.")
        if not _is_real(self.rope_ntk_factor) or self.rope_ntk_factor < 1:
            raise ConfigError(f"rope_scaling factor is {self.rope_ntk_factor!r}, not a number of 1 or more.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            rate = getattr(self, name)
            if not _is_real(rate) or not 0 <= rate < 1:
                raise ConfigError(f"{name} is {rate!r}, not a probability from 0 to below 1.")
        if self.hidden_size % self.num_attention_heads or self.head_dim % 2:
            raise ConfigError(
                f"hidden_size {self.hidden_size} over num_attention_heads {self.num_attention_heads} is not an even "
                "head size, which RoPE needs; fix the config."
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def rope_parameters(self) -> dict[str, Any]:
        """transformers' ``rope_parameters`` for this RoPE (static NTK as a ``linear`` rope)."""
        if self.rope_ntk_factor == 1:
            return {"rope_type": "default", "rope_theta": float(self.rope_theta)}
        return {
            "rope_type": "linear",
            "rope_theta": float(self.rope_theta * self.rope_ntk_factor),
            "factor": float(self.rope_ntk_factor ** (2 / self.head_dim)),
        }

    @classmethod
    def gte_base_en_v15(cls) -> GteConfig:
        """Alibaba-NLP/gte-base-en-v1.5."""
        return cls(vocab_size=30528, type_vocab_size=0, pad_token_id=0, rope_theta=500000.0, rope_ntk_factor=2.0)

    @classmethod
    def gte_large_en_v15(cls) -> GteConfig:
        """Alibaba-NLP/gte-large-en-v1.5."""
        return cls(
            vocab_size=30528,
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            type_vocab_size=2,
            pad_token_id=0,
            rope_theta=160000.0,
            rope_ntk_factor=2.0,
        )

    @classmethod
    def gte_multilingual_base(cls) -> GteConfig:
        """Alibaba-NLP/gte-multilingual-base (XLM-R vocabulary, ``<pad>`` is id 1)."""
        return cls(vocab_size=250048, type_vocab_size=1, pad_token_id=1, rope_theta=20000.0, rope_ntk_factor=8.0)

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], source: str = "config") -> GteConfig:
        """Reads a ``config.json`` (the hub's ``"new"`` or transformers' ``"gte"``); ``source`` names it in errors.

        Raises:
            ConfigError: a field is malformed, or an option changes the maths in a way gte_jax does not
                implement (``logn_attention_scale``, RMS norm, absolute positions, another RoPE scaling).
        """
        model_type = hf.get("model_type")
        if model_type not in ("new", "gte"):
            raise ConfigError(f"{source}: model_type {model_type!r} is not a GTE v1.5 model ('new' or 'gte').")
        fields = {f.name for f in dataclasses.fields(cls)} - {"rope_theta", "rope_ntk_factor"}
        values: dict[str, Any] = dict(_NEW_DEFAULTS) if model_type == "new" else {}
        values.update({k: v for k, v in hf.items() if k in fields and v is not None})
        try:
            values.update(_read_new_options(hf) if model_type == "new" else _read_rope_parameters(hf))
            values["rope_theta"] = values.get("rope_theta", _NEW_DEFAULTS["rope_theta"])
            return cls(**values)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf_config(self) -> dict[str, Any]:
        """The ``config.json`` transformers' ``GteModel`` loads with the same shapes and numerics."""
        out: dict[str, Any] = {"architectures": ["GteModel"], "model_type": "gte"}
        out.update(dataclasses.asdict(self))
        del out["rope_theta"], out["rope_ntk_factor"]
        out["rope_parameters"] = self.rope_parameters()
        return out


def _read_new_options(hf: dict[str, Any]) -> dict[str, Any]:
    """The hub's NewConfig options: RoPE settings, and a refusal of those that change the maths unimplemented."""
    if hf.get("logn_attention_scale"):
        raise ConfigError(
            "logn_attention_scale true (attention scaled by log length) is not supported; set it to false only if "
            "the model was trained without it."
        )
    norm = hf.get("layer_norm_type", "layer_norm")
    if norm != "layer_norm":
        raise ConfigError(f"layer_norm_type {norm!r} is not supported; gte_jax runs 'layer_norm'.")
    pos = hf.get("position_embedding_type", "rope")
    if pos != "rope":
        raise ConfigError(f"position_embedding_type {pos!r} is not supported; gte_jax runs 'rope'.")
    out: dict[str, Any] = {}
    if hf.get("rope_theta") is not None:
        out["rope_theta"] = hf["rope_theta"]
    scaling = hf.get("rope_scaling")
    if scaling is None:
        return out
    if not isinstance(scaling, dict):
        raise ConfigError(f'rope_scaling is {scaling!r}, not null or {{"type": "ntk", "factor": F}}.')
    kind = scaling.get("type", scaling.get("rope_type"))
    if kind != "ntk" or scaling.get("mixed_b") is not None:
        raise ConfigError(
            f"rope_scaling {scaling!r} is not supported; gte_jax runs static NTK scaling "
            '({"type": "ntk", "factor": F}, no mixed_b).'
        )
    out["rope_ntk_factor"] = scaling.get("factor")
    return out


def _read_rope_parameters(hf: dict[str, Any]) -> dict[str, Any]:
    """transformers' ``rope_parameters`` (``default``, or ``linear`` as static NTK is written) as theta and factor."""
    rope = hf.get("rope_parameters")
    if rope is None:  # transformers still reads a top-level rope_theta
        return {"rope_theta": hf.get("rope_theta", _GTE_DEFAULT_THETA)}
    if not isinstance(rope, dict):
        raise ConfigError(f'rope_parameters is {rope!r}, not an object such as {{"rope_type": "default", ...}}.')
    kind = rope.get("rope_type", rope.get("type", "default"))
    theta = rope.get("rope_theta", hf.get("rope_theta", _GTE_DEFAULT_THETA))
    if kind == "default":
        return {"rope_theta": theta}
    factor: Any = rope.get("factor")
    if kind != "linear" or not _is_real(factor) or factor < 1 or not _is_real(theta):
        raise ConfigError(
            f"rope_parameters {rope!r} is not supported; gte_jax runs rope_type 'default' and 'linear' (factor >= 1)."
        )
    heads, width = hf.get("num_attention_heads", 12), hf.get("hidden_size", 768)
    if not (_is_int(heads) and _is_int(width) and heads > 0 and width % heads == 0):
        return {"rope_theta": theta}  # the shape check in GteConfig names the field
    # The linear factor F^(2/H) back to the NTK factor F; 12 digits undo the float noise of the round trip.
    ntk = float(f"{factor ** ((width // heads) / 2):.12g}")
    return {"rope_theta": float(f"{theta / ntk:.12g}"), "rope_ntk_factor": ntk}
