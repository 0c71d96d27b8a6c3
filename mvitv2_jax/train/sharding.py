"""Device mesh, shardings, host batches to global arrays, and a prefetch thread."""

import queue
import threading
from typing import Any, Iterable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mvitv2_jax import models

DATA_AXIS = 'data'
# Leaves smaller than this stay replicated under shard_params: sharding them
# saves little memory and costs a gather each.
_MIN_SHARDED_SIZE = 2**16


def create_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh, axis 'data', over `devices` (default: every device of every host).

  Args:
    devices: e.g. the compile-only devices of a TPU slice (tools/compile_report.py).

  Returns:
    The mesh.
  """
  devices = jax.devices() if devices is None else list(devices)
  # Auto on purpose: Explicit axes reject the model's reshapes that fold the
  # sharded batch axis into another one.
  return jax.make_mesh(
      (len(devices),), (DATA_AXIS,),
      axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def data_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The same full copy on every device."""
  return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], num_shards: int, stacked: bool = False,
              min_size: int | None = None) -> P:
  """Shards the largest axis divisible by `num_shards`; small leaves replicate.

  Args:
    shape: the leaf's shape.
    num_shards: size of the 'data' axis.
    stacked: the leaf stacks the blocks of a scanned run on axis 0, which stays whole
      (each scan step reads one row).
    min_size: leaves of fewer elements replicate (default `_MIN_SHARDED_SIZE`).

  Returns:
    The leaf's PartitionSpec.
  """
  min_size = _MIN_SHARDED_SIZE if min_size is None else min_size
  if num_shards == 1 or int(np.prod(shape)) < min_size:
    return P()
  divisible = [i for i, n in enumerate(shape) if n % num_shards == 0 and not (stacked and i == 0)]
  if not divisible:
    return P()
  axis = max(divisible, key=lambda i: shape[i])
  spec = [None] * len(shape)
  spec[axis] = DATA_AXIS
  return P(*spec)


def state_shardings(abstract_state: Any, mesh: jax.sharding.Mesh, shard_params: bool,
                    family: models.Family) -> Any:
  """Shardings for a train state (params, optimizer state, counters).

  Args:
    abstract_state: pytree of `jax.ShapeDtypeStruct` (from `jax.eval_shape`).
    mesh: the device mesh.
    shard_params: FSDP-style sharding over 'data' instead of replication.
    family: the model's family (which leaves stack scanned blocks).

  Returns:
    A pytree of `NamedSharding` with the structure of `abstract_state`.
  """
  if not shard_params:
    return jax.tree.map(lambda _: replicated(mesh), abstract_state)
  n = mesh.shape[DATA_AXIS]
  # Optimizer moments have their param's shape and path, so they get the same spec.
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, fsdp_spec(x.shape, n, family.stacked(path))),
      abstract_state)


def host_to_global(batch: Any, mesh: jax.sharding.Mesh) -> Any:
  """Assembles per-process batches into global arrays sharded on 'data'.

  Args:
    batch: pytree of NumPy arrays `[local_batch, ...]` on this process.
    mesh: the device mesh.

  Returns:
    The same pytree of `jax.Array`s `[local_batch * process_count, ...]`.
  """
  sharding = data_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      batch)


class _End:
  """Marks the end of the source iterator in the queue."""


def prefetch(batches: Iterable[Any], mesh: jax.sharding.Mesh,
             size: int = 2) -> Iterator[Any]:
  """Moves host batches to devices on a thread, `size` batches ahead.

  Closing the generator (or ending it) stops the thread and waits for it, after closing
  `batches` there: no thread is left inside JAX or tf.data when the process exits.

  Args:
    batches: iterable of host (NumPy) batches.
    mesh: the device mesh.
    size: how many global batches may wait on the devices.

  Yields:
    Global batches, in order. An exception in the source is re-raised here.
  """
  q = queue.Queue(maxsize=size)
  stop = threading.Event()
  source = iter(batches)

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def produce():
    try:
      for batch in source:
        # Checked before the transfer too: the consumer may be gone.
        if stop.is_set() or not put(host_to_global(batch, mesh)):
          return
      put(_End())
    except Exception as e:  # pylint: disable=broad-except
      put(e)
    finally:
      # Here, not at interpreter exit: the source may hold a tf.data iterator.
      close = getattr(source, 'close', None)
      if close is not None:
        close()

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if isinstance(item, _End):
        return
      if isinstance(item, Exception):
        raise item
      yield item
  finally:
    # A daemon thread still inside a JAX call when the interpreter finalizes is ended
    # by pthread_exit through C++ frames: "terminate called ... FATAL: exception not
    # rethrown", exit 134. Wait for it; it stops within one batch.
    stop.set()
    thread.join()
