"""Model families, chosen from a checkpoint's ``config.json`` through one registry.

Each family lives in its own folder (``bert/``, ...) with its config, NNX module and conversion
rules, and is described to the rest of gte_jax by a :class:`~gte_jax.models.family.Family`.
"""

from __future__ import annotations

import importlib
from typing import Any

from gte_jax.config import ConfigError
from gte_jax.models.family import Family

# model_type -> the family package that runs it; imported on first use.
_PACKAGES = {"bert": "gte_jax.models.bert", "modernbert": "gte_jax.models.modernbert"}


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
