"""The sentence-transformers settings a checkpoint carries: pooling mode and max length."""

from __future__ import annotations

import os

from gte_jax.config import ConfigError
from gte_jax.hub import read_json

_POOLING_TYPE = "sentence_transformers.models.Pooling"
_MODE_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def pooling_mode(model_dir: str) -> str:
    """``"mean"`` or ``"cls"``, from ``modules.json`` / ``1_Pooling/config.json``; mean when absent.

    Raises:
        ConfigError: the checkpoint asks for a pooling this package does not implement.
    """
    modules = read_json(model_dir, "modules.json") or []
    folder = next((m.get("path", "") for m in modules if m.get("type") == _POOLING_TYPE), "1_Pooling")
    cfg = read_json(model_dir, os.path.join(folder, "config.json"))
    if cfg is None:
        return "mean"
    modes = [name for key, name in _MODE_KEYS.items() if cfg.get(key)]
    if modes == ["mean"] or modes == ["cls"]:
        return modes[0]
    if not modes:
        return "mean"
    raise ConfigError(
        f"{model_dir}/{folder}/config.json asks for pooling {modes}; gte_jax supports 'mean' or 'cls' alone."
    )


def max_seq_length(model_dir: str) -> int | None:
    """``max_seq_length`` from ``sentence_bert_config.json``, or None."""
    cfg = read_json(model_dir, "sentence_bert_config.json") or {}
    value = cfg.get("max_seq_length")
    return int(value) if value else None
