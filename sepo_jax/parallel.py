"""Device meshes and sharding: the batch of episode slots on the `data` axis, parameters replicated.

On one device this is the identity; on many, `jit` partitions the step from these annotations.
`initialize_distributed()` joins a multi-host run (`jax.distributed.initialize`) when the usual
coordinator variables are set, so the same command runs on a laptop and on a pod slice.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def initialize_distributed() -> None:
    """Join a multi-process run when JAX_COORDINATOR_ADDRESS (plus JAX_NUM_PROCESSES and
    JAX_PROCESS_ID) are set; a no-op otherwise."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") and not jax.distributed.is_initialized():
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )


def make_mesh(data: int = -1) -> Mesh:
    """A 1-D mesh over `data` devices (-1 = all)."""
    devices = jax.devices()
    if data == -1:
        data = len(devices)
    if not 1 <= data <= len(devices):
        raise ValueError(f"config.mesh.data={data}, but there are {len(devices)} devices")
    return Mesh(np.asarray(devices[:data]), (DATA,))


def check_divisible(mesh: Mesh, size: int, what: str) -> None:
    n = mesh.shape[DATA]
    if size % n:
        raise ValueError(f"{what} = {size} is not divisible by the {n} devices of the mesh's data axis")


def replicate(mesh: Mesh, tree):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(mesh: Mesh, x):
    """Constrain the leading (episode) axis of `x` to the data axis (inside or outside jit)."""
    sharding = NamedSharding(mesh, P(DATA))
    if isinstance(x, jax.core.Tracer):
        return jax.lax.with_sharding_constraint(x, sharding)
    return jax.device_put(x, sharding)
