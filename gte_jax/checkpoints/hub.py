"""Finding a model's files: a local directory, or a Hugging Face Hub id through its cache."""

from __future__ import annotations

import json
import os
from typing import Any

from gte_jax.errors import ConfigError, UserError

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


def module_config_files(model_dir: str) -> list[str]:
    """The ``config.json`` of each module folder that ``modules.json`` names (``1_Pooling`` or another name).

    A malformed ``modules.json`` gives none here; reading the sentence settings reports it.
    """
    path = os.path.join(model_dir, "modules.json")
    try:
        with open(path, encoding="utf-8") as f:
            modules = json.load(f)
    except (OSError, ValueError):
        return []
    if not isinstance(modules, list):
        return []
    folders = [m.get("path") for m in modules if isinstance(m, dict)]
    return [f"{folder}/config.json" for folder in folders if isinstance(folder, str) and folder.strip("./")]


class ModelNotFoundError(FileNotFoundError, UserError):
    """The model is neither a local directory nor reachable (or cached) on the Hub."""


# huggingface_hub's client has no connect timeout: where the network drops packets or name lookups hang,
# a lookup took 4-10 s (or minutes) to fail. A connection the Hub does not accept in this time counts as
# offline, and only huggingface_hub's cache is used.
HUB_CONNECT_TIMEOUT = 1.5


def hub_unreachable(timeout: float = HUB_CONNECT_TIMEOUT) -> str | None:
    """Why the Hugging Face Hub cannot be reached, or None when it can.

    Reachable means a TCP connection to the Hub's endpoint (``HF_ENDPOINT``), or to the proxy the
    environment names for it, opens within ``timeout`` seconds, name lookup included.
    """
    import socket
    import threading
    import urllib.request
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = None if urllib.request.proxy_bypass(host) else urllib.request.getproxies().get(url.scheme)
    if proxy:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[str] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append("")
        except TimeoutError:  # the same as running out of time in join() below, whichever comes first
            pass
        except OSError as e:
            outcome.append(f"cannot connect to {host}:{port}: {e.strerror or e}")

    # In a thread: a hung name lookup cannot be given a timeout, so it is left behind instead.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return (outcome[0] or None) if outcome else f"no connection to {host}:{port} within {timeout:g} s"


def resolve_model_dir(name_or_path: str, *, revision: str | None = None, cache_dir: str | None = None) -> str:
    """A local directory holding the model's files.

    A path that exists is used as is. Anything else is taken as a Hub id and
    fetched into huggingface_hub's cache (safetensors preferred; the PyTorch
    pickle only when the repository has no safetensors).

    When the Hub does not accept a connection within :data:`HUB_CONNECT_TIMEOUT`
    seconds, or ``HF_HUB_OFFLINE`` is set, only the cache is looked at.

    Raises:
        ModelNotFoundError: the directory does not exist and the Hub could not
            provide the model; the message says how to pass a local directory,
            and where the bundled offline model is.
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
    from huggingface_hub import constants
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else hub_unreachable()

    def fetch(weights: list[str]) -> str:
        return huggingface_hub.snapshot_download(
            name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=METADATA_FILES + weights,
            local_files_only=offline is not None,
        )

    try:
        local = fetch([FLAX_WEIGHTS, SAFE_WEIGHTS, SAFE_INDEX, "model-*.safetensors"])
        if not any(os.path.exists(os.path.join(local, f)) for f in (FLAX_WEIGHTS, SAFE_WEIGHTS, SAFE_INDEX)):
            local = fetch([TORCH_WEIGHTS, TORCH_INDEX, "pytorch_model-*.bin"])
        modules = [f for f in module_config_files(local) if not os.path.exists(os.path.join(local, f))]
        if modules:  # a Pooling folder under another name than 1_Pooling: known only once modules.json is in
            local = fetch(modules)
    except (OSError, ValueError, HFValidationError) as e:  # hub errors subclass these
        from gte_jax.checkpoints.bundle import offline_hint  # imported here: bundle -> params -> hub

        if offline is not None and isinstance(e, LocalEntryNotFoundError):
            reason = f"{offline}; it is not in the cache"
        else:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelNotFoundError(
            f"Could not load model {name_or_path!r}: it is not a local directory, and the Hugging Face Hub "
            f"could not provide it ({reason}). Pass the path of a local model directory instead "
            f"(download it where the Hub is reachable: `hf download {name_or_path} --local-dir DIR`), "
            f"or set HF_HOME to a cache that holds it. {offline_hint()}"
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
