"""Data parallelism with ``jax.sharding``: the batch is split over a ``data`` mesh axis, every
parameter and optimizer state is replicated, and ``jax.jit`` inserts the gradient all-reduce.

One process drives all its local devices; several hosts run one process each after
:func:`initialize_distributed` (``jax.distributed.initialize``), every process holding the whole
dataset and computing the same batch indices from the seed, and feeding only its own slice.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from qdarts.errors import ConfigError

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over ``devices`` (default: every device of every process) named ``data``."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def initialize_distributed() -> None:
  """Joins a multi-host run (coordinator and process ids from the cluster environment)."""
  jax.distributed.initialize()


def check_batch_divides(batch_size: int, mesh: Mesh) -> None:
  """Each device must get the same number of samples (else shapes differ and XLA refuses)."""
  n = mesh.devices.size
  if batch_size % n:
    raise ConfigError(f"data.batch_size: {batch_size} is not a multiple of the {n} devices")


def replicate(tree, mesh: Mesh):
  """Every leaf copied to every device of ``mesh``."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(x: jax.Array, mesh: Mesh) -> jax.Array:
  """``x`` ``(B, ...)``, the same global batch on every process, split along B over ``data``.

  Each process contributes its contiguous slice of rows; on one host this is a device_put.
  """
  sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  per_process = x.shape[0] // jax.process_count()
  start = jax.process_index() * per_process
  return jax.make_array_from_process_local_data(sharding, x[start : start + per_process])
