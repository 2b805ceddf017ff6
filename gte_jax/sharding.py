"""Where arrays live: the device mesh and the partition specs, named by dimension."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def default_mesh() -> Mesh:
    """A 1-D ``data`` mesh over every device of every process."""
    return Mesh(np.asarray(jax.devices()), (DATA,))


def local_mesh() -> Mesh:
    """A 1-D ``data`` mesh over this process's devices only (independent work per host)."""
    return Mesh(np.asarray(jax.local_devices()), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Parameters: a full copy on every device."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Inputs and outputs: rows split over the ``data`` axis."""
    return NamedSharding(mesh, P(DATA))


def data_parallelism(mesh: Mesh) -> int:
    """How many ways a batch is split (a batch's rows must be a multiple of this)."""
    return mesh.shape.get(DATA, 1)
