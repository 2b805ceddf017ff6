"""Finding a model's files: a local directory, or a Hugging Face Hub id through its cache."""

from __future__ import annotations

import json
import os
from typing import Any

from gte_jax.config import ConfigError

DEFAULT_MODEL = "thenlper/gte-small"

# Weights files, by preference. The first is what ``gte-jax convert`` writes: NNX paths as keys, float32.
# The others in transformers' order (a single file before a sharded index), so both read the same file.
FLAX_WEIGHTS = "gte_jax.safetensors"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (FLAX_WEIGHTS, SAFE_WEIGHTS, SAFE_INDEX, TORCH_WEIGHTS, TORCH_INDEX)

# Everything besides the weights that a model directory may hold and we read.
METADATA_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
]


class ModelNotFoundError(FileNotFoundError):
    """The model is neither a local directory nor reachable (or cached) on the Hub."""


def resolve_model_dir(name_or_path: str, *, revision: str | None = None, cache_dir: str | None = None) -> str:
    """A local directory holding the model's files.

    A path that exists is used as is. Anything else is taken as a Hub id and
    fetched into huggingface_hub's cache (safetensors preferred; the PyTorch
    pickle only when the repository has no safetensors).

    Raises:
        ModelNotFoundError: the directory does not exist and the Hub could not
            provide the model; the message says how to pass a local directory.
    """
    path = os.path.expanduser(os.fspath(name_or_path))
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ModelNotFoundError(
            f"{name_or_path!r} is not a model directory; pass a directory with config.json and weights, or a Hub id "
            f"such as {DEFAULT_MODEL!r}."
        )
    import huggingface_hub
    from huggingface_hub.errors import HFValidationError

    def fetch(weights: list[str]) -> str:
        return huggingface_hub.snapshot_download(
            name_or_path, revision=revision, cache_dir=cache_dir, allow_patterns=METADATA_FILES + weights
        )

    try:
        local = fetch([FLAX_WEIGHTS, SAFE_WEIGHTS, SAFE_INDEX, "model-*.safetensors"])
        if not any(os.path.exists(os.path.join(local, f)) for f in (FLAX_WEIGHTS, SAFE_WEIGHTS, SAFE_INDEX)):
            local = fetch([TORCH_WEIGHTS, TORCH_INDEX, "pytorch_model-*.bin"])
    except (OSError, ValueError, HFValidationError) as e:  # hub errors subclass these
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelNotFoundError(
            f"Could not load model {name_or_path!r}: it is not a local directory, and the Hugging Face Hub "
            f"could not provide it ({reason}). Pass the path of a local model directory instead "
            f"(download it where the Hub is reachable: `hf download {name_or_path} --local-dir DIR`), "
            "or set HF_HOME to a cache that holds it."
        ) from None
    if not os.path.exists(os.path.join(local, "config.json")):
        raise ModelNotFoundError(f"{name_or_path!r} on the Hub has no config.json; it is not a BERT model directory.")
    return local


def read_json(model_dir: str, name: str) -> Any:
    """A JSON file of the model directory, or None when it is absent.

    Raises:
        ConfigError: the file is not valid UTF-8 JSON (the message names it).
    """
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); restore it from the original model.") from None
