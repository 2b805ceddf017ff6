"""The sentence-transformers settings a checkpoint carries, read as sentence-transformers 6.x reads them.

- ``modules.json``: the module pipeline. gte_jax runs a BERT (``Transformer``), ``Pooling`` and
  ``Normalize``; any other module (a ``Dense`` projection, ``LayerNorm``, a ``Router``) would change
  the vectors, so a checkpoint naming one is refused rather than run without it.
- ``1_Pooling/config.json`` (the Pooling module's folder): the pooling mode(s), new-style
  ``pooling_mode`` or the legacy ``pooling_mode_*_tokens`` booleans, and ``include_prompt``.
- ``sentence_bert_config.json``: ``max_seq_length``.
- ``config_sentence_transformers.json``: ``prompts``, ``default_prompt_name``,
  ``similarity_fn_name`` and ``truncate_dim``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from gte_jax.checkpoints.hub import read_json
from gte_jax.errors import ConfigError
from gte_jax.models.pooling import POOLING_MODES
from gte_jax.models.similarity import SIMILARITY_FUNCTIONS

# Legacy boolean keys, in the order sentence-transformers concatenates their modes.
_LEGACY_MODE_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# What a modules.json "type" names, by its last dotted part: "sentence_transformers.models.Pooling" (saved by
# sentence-transformers < 6) and "sentence_transformers.sentence_transformer.modules.pooling" (6.x) alike.
_SUPPORTED_MODULES = ("transformer", "pooling", "normalize")


@dataclasses.dataclass(frozen=True)
class SentenceConfig:
    """A checkpoint's sentence-transformers settings; the defaults are those of a bare BERT directory."""

    pooling: str = "mean"
    """Pooling mode, or modes joined by ``+`` (concatenated), see :mod:`gte_jax.models.pooling`."""
    include_prompt: bool = True
    """Whether prompt tokens count in the pooling (``False`` for INSTRUCTOR-style checkpoints)."""
    normalize_module: bool = False
    """Whether ``modules.json`` ends in a ``Normalize`` module."""
    max_seq_length: int | None = None
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    truncate_dim: int | None = None
    pooling_folder: str = "1_Pooling"
    """The Pooling module's folder, as ``modules.json`` names it."""


def read_sentence_config(
    model_dir: str, hidden_size: int | None = None, default_pooling: str = "mean"
) -> SentenceConfig:
    """The settings of ``model_dir``'s sentence-transformers files; defaults for the files it lacks
    (``default_pooling``, the model family's, when it has no Pooling config). ``hidden_size`` bounds a
    checkpoint's ``truncate_dim``.

    Args:
        model_dir: the checkpoint's directory.
        hidden_size: the model's (``config.json``); when given, ``truncate_dim`` must not exceed the
            pooled dimension (``hidden_size`` times the number of pooling modes).

    Raises:
        ConfigError: a file is malformed, names a module or pooling mode gte_jax does not run, or a
            setting has the wrong type; the message names the file and key.
    """
    folder, normalize = _modules(model_dir)
    pooling, include_prompt = _pooling(model_dir, folder, default_pooling)
    st = _object(model_dir, "config_sentence_transformers.json")
    where = f"{model_dir}/config_sentence_transformers.json"
    prompts = st.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ConfigError(f"{where}: prompts must map prompt names to prompt strings, not {prompts!r}.")
    default = st.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ConfigError(f"{where}: default_prompt_name {default!r} is not one of its prompts {sorted(prompts)}.")
    similarity = st.get("similarity_fn_name")
    if similarity is not None and similarity not in SIMILARITY_FUNCTIONS:
        raise ConfigError(
            f"{where}: similarity_fn_name {similarity!r} is not supported; gte_jax scores with one of "
            f"{SIMILARITY_FUNCTIONS} (pass similarity_fn_name= to from_pretrained to choose one)."
        )
    truncate_dim = st.get("truncate_dim")
    dims = hidden_size * len(pooling.split("+")) if hidden_size else None
    if truncate_dim is not None and (
        isinstance(truncate_dim, bool)
        or not isinstance(truncate_dim, int)
        or truncate_dim < 1
        or (dims is not None and truncate_dim > dims)
    ):
        allowed = f"1 to {dims}" if dims else "a positive integer"
        raise ConfigError(
            f"{where}: truncate_dim must be {allowed} (the dimensions to keep) or null (all), not {truncate_dim!r}; "
            "fix the file."
        )
    return SentenceConfig(
        pooling=pooling,
        include_prompt=include_prompt,
        normalize_module=normalize,
        max_seq_length=max_seq_length(model_dir),
        prompts=dict(prompts),
        default_prompt_name=default,
        similarity_fn_name=similarity,
        truncate_dim=truncate_dim,
        pooling_folder=folder,
    )


def max_seq_length(model_dir: str) -> int | None:
    """``max_seq_length`` from ``sentence_bert_config.json``, or None.

    Raises:
        ConfigError: it is not a positive integer (the message names the file).
    """
    cfg = _object(model_dir, "sentence_bert_config.json")
    value = cfg.get("max_seq_length")
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{model_dir}/sentence_bert_config.json: max_seq_length must be a positive integer or null, not "
            f"{value!r}; fix the file."
        )
    return value


def _object(model_dir: str, name: str) -> dict[str, Any]:
    cfg = read_json(model_dir, name)
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{model_dir}/{name} must hold a JSON object, not a {type(cfg).__name__}.")
    return cfg


def _modules(model_dir: str) -> tuple[str, bool]:
    """The Pooling module's folder (``1_Pooling`` when unnamed) and whether a Normalize module follows."""
    modules = read_json(model_dir, "modules.json")
    if modules is None:
        return "1_Pooling", False
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ConfigError(f"{model_dir}/modules.json must hold a JSON list of module objects.")
    folder, normalize = "1_Pooling", False
    for i, module in enumerate(modules):
        kind = str(module.get("type", ""))
        name = kind.rsplit(".", 1)[-1].lower()
        if not kind.startswith("sentence_transformers.") or name not in _SUPPORTED_MODULES:
            raise ConfigError(
                f"{model_dir}/modules.json: module {i} is {kind!r} (folder {module.get('path', '')!r}), which gte_jax "
                "does not run (it runs Transformer, Pooling and Normalize); without it the vectors would differ from "
                "sentence-transformers', so use sentence-transformers for this checkpoint."
            )
        if name == "pooling":
            folder = str(module.get("path") or "1_Pooling")
        normalize = normalize or name == "normalize"
    return folder, normalize


def _pooling(model_dir: str, folder: str, default: str) -> tuple[str, bool]:
    """The pooling mode string and ``include_prompt`` of the Pooling module's ``config.json``."""
    name = os.path.join(folder, "config.json")
    where = f"{model_dir}/{name}"
    cfg = _object(model_dir, name)
    if not cfg:
        return default, True
    if "pooling_mode" in cfg:
        value = cfg["pooling_mode"]
        modes = [value] if isinstance(value, str) else value
        if not isinstance(modes, list) or not modes or not all(isinstance(m, str) for m in modes):
            raise ConfigError(f"{where}: pooling_mode must be a mode name or a list of them, not {value!r}.")
    else:
        modes = [mode for key, mode in _LEGACY_MODE_KEYS.items() if cfg.get(key)] or ["mean"]
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise ConfigError(f"{where} asks for pooling {unknown[0]!r}; gte_jax supports {POOLING_MODES}.")
    include_prompt = cfg.get("include_prompt", True)
    if not isinstance(include_prompt, bool):
        raise ConfigError(f"{where}: include_prompt must be true or false, not {include_prompt!r}.")
    return "+".join(modes), include_prompt
