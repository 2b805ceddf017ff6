"""gte-jax: the GTE text-embedding models in JAX (Flax NNX), on CPU, GPU and TPU.

Names are imported on first use (PEP 562), so ``gte-jax --help`` and the file-only
modules (``gte_jax.checkpoints.hub``, ``gte_jax.models.bert.config``) start without importing JAX.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gte_jax.checkpoints.hub import DEFAULT_MODEL, ModelNotFoundError
    from gte_jax.engine.encoder import GTEEncoder
    from gte_jax.engine.reranker import GTEReranker
    from gte_jax.errors import CheckpointError, ConfigError
    from gte_jax.models.bert.config import GTEConfig
    from gte_jax.models.bert.modeling import BertModel
    from gte_jax.models.pooling import cls_pool, l2_normalize, mean_pool

# public name -> module that defines it
_EXPORTS = {
    "DEFAULT_MODEL": "gte_jax.checkpoints.hub",
    "BertModel": "gte_jax.models.bert.modeling",
    "CheckpointError": "gte_jax.errors",
    "ConfigError": "gte_jax.models.bert.config",
    "GTEConfig": "gte_jax.models.bert.config",
    "GTEEncoder": "gte_jax.engine.encoder",
    "GTEReranker": "gte_jax.engine.reranker",
    "ModelNotFoundError": "gte_jax.checkpoints.hub",
    "cls_pool": "gte_jax.models.pooling",
    "l2_normalize": "gte_jax.models.pooling",
    "mean_pool": "gte_jax.models.pooling",
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
