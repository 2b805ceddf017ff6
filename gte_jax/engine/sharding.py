"""Where arrays live: the device mesh and the partition specs, named by dimension."""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gte_jax.models.family import DATA, MODEL


def default_mesh() -> Mesh:
    """A 1-D ``data`` mesh over every device of every process."""
    return Mesh(np.asarray(jax.devices()), (DATA,))


def local_mesh() -> Mesh:
    """A 1-D ``data`` mesh over this process's devices only (independent work per host)."""
    return Mesh(np.asarray(jax.local_devices()), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(mesh, P())


def param_sharding(mesh: Mesh, path: str, specs: Sequence[tuple[str, P]]) -> NamedSharding:
    """Where the parameter at NNX ``path`` lives: split over ``model`` as the family's ``specs``
    (``(path regex, PartitionSpec)`` pairs, :attr:`gte_jax.models.family.Family.param_specs`) say
    if the mesh has that axis, else replicated."""
    if MODEL in mesh.axis_names:
        for pattern, spec in specs:
            if re.search(pattern, path):
                return NamedSharding(mesh, spec)
    return replicated(mesh)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Inputs and outputs: rows split over the ``data`` axis."""
    return NamedSharding(mesh, P(DATA))


def is_multiprocess(mesh: Mesh) -> bool:
    """Whether the mesh spans devices of several processes (``jax.distributed``)."""
    return len({d.process_index for d in mesh.devices.flat}) > 1


def data_parallelism(mesh: Mesh) -> int:
    """How many ways a batch is split (a batch's rows must be a multiple of this)."""
    return mesh.shape.get(DATA, 1)
