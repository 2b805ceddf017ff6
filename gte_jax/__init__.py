"""gte-jax: the GTE text-embedding models in JAX (Flax NNX), on CPU, GPU and TPU."""

from gte_jax.config import GTEConfig
from gte_jax.encoder import GTEEncoder
from gte_jax.hub import DEFAULT_MODEL, ModelNotFoundError
from gte_jax.modeling import BertModel
from gte_jax.params import CheckpointError
from gte_jax.pooling import cls_pool, l2_normalize, mean_pool

__all__ = [
    "DEFAULT_MODEL",
    "BertModel",
    "CheckpointError",
    "GTEConfig",
    "GTEEncoder",
    "ModelNotFoundError",
    "cls_pool",
    "l2_normalize",
    "mean_pool",
]
__version__ = "0.1.0"
