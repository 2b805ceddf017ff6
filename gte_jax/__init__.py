"""gte-jax: the GTE text-embedding models in JAX (Flax NNX), on CPU, GPU and TPU.

Names are imported on first use (PEP 562), so ``gte-jax --help`` and the file-only
modules (``gte_jax.hub``, ``gte_jax.config``) start without importing JAX.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gte_jax.config import ConfigError, GTEConfig
    from gte_jax.encoder import GTEEncoder
    from gte_jax.hub import DEFAULT_MODEL, ModelNotFoundError
    from gte_jax.modeling import BertModel
    from gte_jax.params import CheckpointError
    from gte_jax.pooling import cls_pool, l2_normalize, mean_pool
    from gte_jax.reranker import GTEReranker

# public name -> module that defines it
_EXPORTS = {
    "DEFAULT_MODEL": "gte_jax.hub",
    "BertModel": "gte_jax.modeling",
    "CheckpointError": "gte_jax.params",
    "ConfigError": "gte_jax.config",
    "GTEConfig": "gte_jax.config",
    "GTEEncoder": "gte_jax.encoder",
    "GTEReranker": "gte_jax.reranker",
    "ModelNotFoundError": "gte_jax.hub",
    "cls_pool": "gte_jax.pooling",
    "l2_normalize": "gte_jax.pooling",
    "mean_pool": "gte_jax.pooling",
}
__all__ = [
    "DEFAULT_MODEL",
    "BertModel",
    "CheckpointError",
    "ConfigError",
    "GTEConfig",
    "GTEEncoder",
    "GTEReranker",
    "ModelNotFoundError",
    "cls_pool",
    "l2_normalize",
    "mean_pool",
]

try:
    __version__ = version("gte-jax")  # one place: pyproject.toml
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gte_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
