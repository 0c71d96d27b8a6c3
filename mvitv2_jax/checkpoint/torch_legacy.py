"""torch's legacy container (torch < 1.6): five pickles, then the raw storages.

The pickles are a magic number, a protocol version, system info, the object, and the
list of storage keys; each storage follows as an int64 element count and its elements.
"""

from typing import Any, BinaryIO

import numpy as np

from mvitv2_jax.checkpoint import arrays
from mvitv2_jax.checkpoint import limits
from mvitv2_jax.checkpoint import torch_pickle
from mvitv2_jax.checkpoint import unpickler
from mvitv2_jax.checkpoint.limits import CheckpointFormatError, describe

MAGIC = 0x1950a86a20f9469cfc6c
_PROTOCOL = 1001


def read(f: BinaryIO, file_size: int, max_bytes: int | None) -> Any:
  """Reads the legacy container.

  Its object pickle precedes the storage data, whose layout depends on element
  types named only inside that pickle. A first pass records them (tensors come
  out as None), then the data is read and the pickle is read again.

  Args:
    f: the open file.
    file_size: its size in bytes.
    max_bytes: the memory cap (see `limits.max_bytes_setting`).

  Returns:
    The object pickle's value, storages loaded from the data after it.
  """
  budget = limits.Budget(file_size, max_bytes)

  def unpickle(load_storage=None):
    return unpickler.load(f, file_size - f.tell(), budget,
                          torch_pickle.TorchResolver(budget, load_storage))

  magic = unpickle()
  if type(magic) is not int or magic != MAGIC:
    raise CheckpointFormatError(
        "not a PyTorch checkpoint: a pickle without torch's legacy magic "
        "number")
  version = unpickle()
  if type(version) is not int or version != _PROTOCOL:
    raise CheckpointFormatError(f"unsupported legacy protocol {describe(version)}")
  sys_info = unpickle()
  if not isinstance(sys_info, dict):
    raise CheckpointFormatError("legacy sys-info record is not a dict")
  big_endian = sys_info.get("little_endian", True) is False
  obj_start = f.tell()

  dtypes = {}

  def record_dtype(dtype, key, numel, view):
    del numel, view
    dtypes.setdefault(key, dtype)
    return torch_pickle.UNRESOLVED

  unpickle(record_dtype)
  keys = unpickle()
  if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
    raise CheckpointFormatError("legacy storage key list is malformed")

  # Each storage: int64 element count, then the elements. Read them all now
  # so that the second pass never moves the file position under the pickle.
  order = "big" if big_endian else "little"
  storages = {}
  for key in keys:
    if key not in dtypes:
      raise CheckpointFormatError(f"storage {describe(key)} listed but never used")
    pos = f.tell()
    count = int.from_bytes(f.read(8), order, signed=True)
    nbytes = count * dtypes[key].itemsize
    if count < 0 or pos + 8 + nbytes > file_size:
      raise CheckpointFormatError(
          f"truncated legacy checkpoint: storage {describe(key)} ends at byte "
          f"{pos + 8 + nbytes} of a {file_size}-byte file")
    budget.charge(nbytes, f"storage {describe(key)}")
    raw = bytearray(nbytes)
    if f.readinto(raw) != nbytes:
      raise CheckpointFormatError(f"truncated legacy checkpoint: storage {describe(key)}")
    storages[key] = arrays.native_order(np.frombuffer(raw, dtypes[key]), big_endian)

  def load_storage(dtype, key, numel, view):
    del dtype, numel  # The file's own count and first-seen type rule.
    if key not in storages:
      raise CheckpointFormatError(f"storage {describe(key)} missing from the key list")
    root = storages[key]
    if view is None:
      return root
    # A view of a larger storage: (view key, element offset, element count).
    _, offset, count = view
    if offset + count > root.size:
      raise CheckpointFormatError(f"storage view of {count} elements at {offset} runs "
                                  f"past a storage of {root.size}")
    return root[offset:offset + count]

  f.seek(obj_start)
  return unpickle(load_storage)
