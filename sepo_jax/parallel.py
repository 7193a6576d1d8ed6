"""Device meshes and sharding: a `data` x `fsdp` mesh, episodes split over both axes, parameters
(and their optimizer moments) sharded over `fsdp` by their logical axes.

Every parameter carries logical axis names (`embed`, `vocab`, `q_heads`, `kv_heads`, `mlp`, `layers`,
`lora_rank`, `norm`, `head_dim`) as NNX metadata; `LOGICAL_RULES` maps them to mesh axes. FSDP shards
the `embed` dimension, which every weight matrix has, so each device holds 1/fsdp of every matrix and
XLA gathers a layer's weights where they are used. On one device this is all the identity.
`initialize_distributed()` joins a multi-host run (`jax.distributed.initialize`) when the usual
coordinator variables are set, so the same command runs on a laptop and on a pod slice.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA, FSDP = "data", "fsdp"
BATCH = (DATA, FSDP)  # the episode axis is split over every device
LOGICAL_RULES = {"embed": FSDP}  # every other logical axis is replicated


def initialize_distributed() -> None:
    """Join a multi-process run: explicitly when JAX_COORDINATOR_ADDRESS (plus JAX_NUM_PROCESSES and
    JAX_PROCESS_ID) are set, or with `SEPO_JAX_DISTRIBUTED=auto` by JAX's own detection (every worker
    of a Cloud TPU pod slice, SLURM, Open MPI); a no-op otherwise."""
    if jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in os.environ]
        if missing:
            raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {' and '.join(missing)} is not")
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    elif os.environ.get("SEPO_JAX_DISTRIBUTED") == "auto":
        jax.distributed.initialize()


def make_mesh(data: int = -1, fsdp: int = 1) -> Mesh:
    """A `data` x `fsdp` mesh (`config.mesh.data`, `config.mesh.fsdp`); -1 on one axis = the devices
    the other leaves."""
    n = len(jax.devices())
    if data == -1 and fsdp == -1:
        raise ValueError("config.mesh.data and config.mesh.fsdp cannot both be -1")
    for key, size, other in (("data", data, fsdp), ("fsdp", fsdp, data)):
        if size == -1:
            if other < 1 or n % other:
                raise ValueError(f"config.mesh.{'fsdp' if key == 'data' else 'data'}={other} does not divide the {n} devices")
        elif size < 1:
            raise ValueError(f"config.mesh.{key}={size}: must be >= 1 or -1 (the devices the other axis leaves)")
    data, fsdp = (n // fsdp if data == -1 else data), (n // data if fsdp == -1 else fsdp)
    if data * fsdp > n:
        raise ValueError(f"config.mesh.data={data} x config.mesh.fsdp={fsdp} needs {data * fsdp} devices, "
                         f"but there are {n}")
    devices = jax.devices()[: data * fsdp]
    missing = set(range(jax.process_count())) - {d.process_index for d in devices}
    if missing:
        raise ValueError(f"config.mesh.data={data} x config.mesh.fsdp={fsdp} leaves out the devices of process(es) "
                         f"{sorted(missing)}: a multi-process mesh must span every process ({n} devices)")
    return Mesh(np.asarray(devices).reshape(data, fsdp), BATCH)


def batch_devices(mesh: Mesh) -> int:
    return mesh.shape[DATA] * mesh.shape[FSDP]


def check_divisible(mesh: Mesh, size: int, what: str) -> None:
    n = batch_devices(mesh)
    if size % n:
        raise ValueError(f"{what} = {size} is not divisible by the {n} devices of the mesh's data x fsdp axes")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def replicate(mesh: Mesh, tree):
    return jax.device_put(tree, replicated(mesh))


def shard_batch(mesh: Mesh, x):
    """Constrain the leading (episode) axis of `x` to the data x fsdp axes (inside or outside jit)."""
    sharding = NamedSharding(mesh, P(BATCH))
    if isinstance(x, jax.core.Tracer):
        return jax.lax.with_sharding_constraint(x, sharding)
    return jax.device_put(x, sharding)


def logical_spec(names, shape, mesh: Mesh) -> P:
    """The mesh partition of an array with logical axis `names`. A dimension that the mesh axis
    does not divide stays replicated (XLA would otherwise pad it)."""
    axes = []
    for name, dim in zip(names or (), shape):
        axis = LOGICAL_RULES.get(name)
        axes.append(axis if axis and mesh.shape[axis] > 1 and dim % mesh.shape[axis] == 0 and axis not in axes else None)
    return P(*axes)


def logical_shardings(mesh: Mesh, tree):
    """NamedShardings for a pytree holding NNX Variables (parameters, optimizer moments built from
    them, abstract or real): each Variable by its `out_sharding` logical names, anything else replicated."""
    def one(x):
        if isinstance(x, nnx.Variable):
            return x.replace(NamedSharding(mesh, logical_spec(x.get_metadata("out_sharding", None), x.shape, mesh)))
        return replicated(mesh)

    return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def abstract(tree, shardings):
    """`jax.ShapeDtypeStruct`s with shardings: the tree's shapes placed on the mesh, nothing allocated."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def gather(tree):
    """Every array of `tree` replicated on its own mesh: sharded parameters gathered whole, so each
    process can read them (`x.addressable_data(0)`) in a multi-process run too."""
    def one(x):
        if isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding):
            return jax.jit(lambda y: y, out_shardings=replicated(x.sharding.mesh))(x)
        return x

    return jax.tree.map(one, tree)
