"""Model families, chosen from a checkpoint's ``config.json`` through one registry.

Each family lives in its own folder (``bert/``, ...) with its config, NNX module and conversion
rules, and is described to the rest of gte_jax by a :class:`~gte_jax.models.family.Family`.
"""

from __future__ import annotations

import importlib
from typing import Any

from gte_jax.errors import ConfigError
from gte_jax.models.family import Family

# model_type -> the family package that runs it; imported on first use.
_PACKAGES = {
    "bert": "gte_jax.models.bert",
    "new": "gte_jax.models.gte",  # the hub's Alibaba-NLP NewModel
    "gte": "gte_jax.models.gte",  # transformers' native GteModel
    "modernbert": "gte_jax.models.modernbert",
}


def families() -> dict[str, Family]:
    """Every family, by ``model_type``."""
    return {t: importlib.import_module(p).FAMILY for t, p in _PACKAGES.items()}


def family_for(hf: dict[str, Any], source: str = "config") -> Family:
    """The family that runs a checkpoint with this ``config.json``.

    Raises:
        ConfigError: its ``model_type`` is none that gte_jax runs (the message lists them).
    """
    model_type = hf.get("model_type", "bert")
    if model_type not in _PACKAGES:
        raise ConfigError(
            f"{source}: model_type {model_type!r} is not supported; gte_jax runs {', '.join(sorted(_PACKAGES))} "
            "encoders (thenlper/gte-*, all-MiniLM, bge, ...)."
        )
    family: Family = importlib.import_module(_PACKAGES[model_type]).FAMILY
    return family


def family_of(config: Any) -> Family:
    """The family of a module's config (``model.config``).

    Raises:
        TypeError: no family has this config class.
    """
    for family in families().values():
        if isinstance(config, family.config_type):
            return family
    raise TypeError(f"{type(config).__name__} is the config of no gte_jax model family.")


def read_config(model_dir: str) -> tuple[Family, Any]:
    """The family and config of a model directory's ``config.json``.

    Raises:
        ConfigError: the file is missing or malformed, or no family runs it (the message names the file and field).
    """
    from gte_jax.files import read_json_object

    source = f"{model_dir}/config.json"
    hf = read_json_object(source)
    family = family_for(hf, source)
    return family, family.read_config(hf, source)


def param_dtype(model: Any) -> Any:
    """The dtype of ``model``'s dense weights (``float32`` or ``bfloat16``; LayerNorms stay float32 either way)."""
    parent, name = next(iter(family_of(model.config).dense_layers(model)))
    return getattr(parent, name).kernel.get_value().dtype
