"""Reads PyTorch checkpoints into NumPy without torch and without running code.

Checkpoints downloaded from the internet are untrusted data, and a pickle can
name any importable callable. The pickles here go through an unpickler that
maps an explicit allowlist of globals to stand-ins defined in this module and
rejects everything else, so nothing the file names is ever imported or called.

Supported containers:
  * torch's zip format (torch >= 1.6): ``<folder>/data.pkl`` plus raw storage
    records ``<folder>/data/<key>``.
  * the legacy format (torch < 1.6): five pickles followed by raw storages.
  * safetensors: a JSON header followed by one data buffer.
"""

import collections
import json
import os
import pickle
import struct
import sys
import zipfile
import zlib
from typing import Any, BinaryIO, Callable, NamedTuple

import ml_dtypes
import numpy as np


class CheckpointFormatError(ValueError):
  """The file is not a checkpoint that can be read safely."""


_BF16 = np.dtype(ml_dtypes.bfloat16)

# torch storage class name -> element type. UntypedStorage holds raw bytes.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": _BF16,
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "UntypedStorage": np.dtype(np.uint8),
}

# torch dtype attribute name (aliases included) -> element type.
_TORCH_DTYPES = {
    "float32": np.dtype(np.float32),
    "float": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "double": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "half": np.dtype(np.float16),
    "bfloat16": _BF16,
    "int64": np.dtype(np.int64),
    "long": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "short": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
}

_SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": _BF16,
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
# Keys under which training checkpoints keep the model weights, by preference.
_WRAPPER_KEYS = ("model_state", "state_dict", "model")

# What a malformed container can make the parsers raise; turned into
# CheckpointFormatError at the boundary.
_PARSE_ERRORS = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile,
                 struct.error, ValueError, TypeError, KeyError, IndexError,
                 AttributeError, OverflowError, NotImplementedError,
                 zlib.error)


class _StorageType(NamedTuple):
  """Stand-in for a torch storage class; only its element type matters.

  A NamedTuple so that a pickle BUILD opcode cannot mutate it.
  """
  name: str
  dtype: np.dtype


class TorchDtype(NamedTuple):
  """Stand-in for a torch dtype object (e.g. ``torch.float32``).

  Not an ``np.dtype`` because a pickle BUILD opcode would call
  ``np.dtype.__setstate__`` on numpy's shared dtype singletons.
  """
  name: str
  numpy: np.dtype

  def __repr__(self):
    return f"torch.{self.name}"


class _Unresolved:
  """Storage placeholder for the legacy format's first, layout-only pass."""


_UNRESOLVED = _Unresolved()

# Loader signature: (dtype, key, numel, legacy view metadata) -> 1-D array.
_StorageLoader = Callable[[np.dtype, str, int, Any], Any]


def _as_str(value: Any) -> Any:
  # Pickles written by Python 2 torch carry bytes where Python 3 has str.
  return value.decode("ascii") if isinstance(value, bytes) else value


def _is_index(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _from_bytes(raw: Any, dtype: np.dtype, big_endian: bool) -> np.ndarray:
  """A 1-D native-byte-order array over raw storage bytes."""
  arr = np.frombuffer(raw, dtype=dtype)
  if dtype.itemsize > 1 and big_endian != (sys.byteorder == "big"):
    arr = arr.byteswap()
  return arr


def _tensor_from_storage(storage: Any, offset: Any, size: Any,
                         stride: Any) -> np.ndarray:
  """Copies the strided view that a torch tensor takes of its storage."""
  if not (isinstance(storage, np.ndarray) and storage.ndim == 1):
    raise CheckpointFormatError(
        f"tensor rebuilt from a {type(storage).__name__}, not a storage")
  size, stride = tuple(size), tuple(stride)
  if (len(size) != len(stride) or not _is_index(offset) or
      not all(_is_index(v) for v in size + stride)):
    raise CheckpointFormatError(
        f"invalid tensor layout: offset {offset!r}, size {size!r}, "
        f"stride {stride!r}")
  if 0 in size:
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise CheckpointFormatError(
        f"tensor with offset {offset}, size {size}, stride {stride} reaches "
        f"element {last} of a storage of {storage.size} elements")
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=size,
      strides=[s * storage.itemsize for s in stride])
  return view.copy()


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only allowlisted globals, to local stand-ins."""

  def __init__(self, file: BinaryIO, load_storage: _StorageLoader):
    super().__init__(file)
    self._load_storage = load_storage

  def find_class(self, module: str, name: str) -> Any:
    qualified = f"{module}.{name}"
    if qualified == "collections.OrderedDict":
      return collections.OrderedDict
    # Bound methods rather than module functions: setattr on a bound method
    # fails, so a BUILD opcode cannot alter shared state.
    rebuilds = {
        "torch._utils._rebuild_tensor": self._rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": self._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": self._rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": self._rebuild_parameter,
    }
    if qualified in rebuilds:
      return rebuilds[qualified]
    if module in ("torch", "torch.storage") and name.endswith("Storage"):
      if name not in _STORAGE_DTYPES:
        raise CheckpointFormatError(f"unsupported storage dtype {qualified}")
      return _StorageType(name, _STORAGE_DTYPES[name])
    if module == "torch" and name in _TORCH_DTYPES:
      return TorchDtype(name, _TORCH_DTYPES[name])
    raise CheckpointFormatError(f"forbidden pickle global {qualified}")

  def persistent_load(self, pid: Any) -> Any:
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and
            _as_str(pid[0]) == "storage"):
      raise CheckpointFormatError(f"unexpected persistent id {pid!r:.200}")
    storage_type, key, numel = pid[1], _as_str(pid[2]), pid[4]
    if not isinstance(storage_type, _StorageType):
      raise CheckpointFormatError(
          f"persistent id names {storage_type!r:.100}, not a storage type")
    if not (isinstance(key, str) and _is_index(numel)):
      raise CheckpointFormatError(f"invalid storage reference {pid!r:.200}")
    view = pid[5] if len(pid) == 6 else None
    return self._load_storage(storage_type.dtype, key, numel, view)

  # Stand-ins for the torch._utils functions that tensors pickle to.
  def _rebuild_tensor(self, storage, storage_offset, size, stride):
    if storage is _UNRESOLVED:
      return None
    return _tensor_from_storage(storage, storage_offset, size, stride)

  def _rebuild_tensor_v2(self, storage, storage_offset, size, stride,
                         requires_grad=False, backward_hooks=None,
                         metadata=None):
    del requires_grad, backward_hooks, metadata  # Autograd state only.
    return self._rebuild_tensor(storage, storage_offset, size, stride)

  def _rebuild_parameter(self, data, requires_grad, backward_hooks,
                         state=None):
    del requires_grad, backward_hooks, state  # A Parameter is its data here.
    return data


def _no_storage(dtype, key, numel, view):
  del dtype, numel, view
  raise CheckpointFormatError(
      f"storage {key!r} referenced outside the checkpoint's object pickle")


def _unpickle(f: BinaryIO, load_storage: _StorageLoader = _no_storage) -> Any:
  return _RestrictedUnpickler(f, load_storage).load()


def _read_zip(f: BinaryIO) -> Any:
  """Reads torch's zip container (torch >= 1.6)."""
  try:
    zf = zipfile.ZipFile(f)
  except zipfile.BadZipFile as e:
    raise CheckpointFormatError(
        f"truncated or corrupt zip container ({e})") from e
  with zf:
    return _read_zip_records(zf)


def _read_zip_records(zf: zipfile.ZipFile) -> Any:
  """Unpickles data.pkl, loading storages from their records on demand."""
  # Everything sits under one folder whose name depends on the saver.
  pkls = [n for n in zf.namelist()
          if n.count("/") == 1 and n.endswith("/data.pkl")]
  if len(pkls) != 1:
    raise CheckpointFormatError(
        "zip archive is not a PyTorch checkpoint (no single <folder>/data.pkl)")
  prefix = pkls[0][:-len("data.pkl")]
  byteorder = "little"
  if prefix + "byteorder" in zf.namelist():
    byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace")
  if byteorder not in ("little", "big"):
    raise CheckpointFormatError(f"unknown byteorder record {byteorder!r}")
  storages = {}

  def load_storage(dtype, key, numel, view):
    del view  # Only the legacy format has view metadata.
    if (key, dtype) not in storages:
      name = f"{prefix}data/{key}"
      try:
        raw = zf.read(name)
      except KeyError:
        raise CheckpointFormatError(f"missing storage record {name}") from None
      need = numel * dtype.itemsize
      if len(raw) < need:
        raise CheckpointFormatError(
            f"storage record {name} holds {len(raw)} bytes, {need} expected")
      storages[key, dtype] = _from_bytes(raw[:need], dtype, byteorder == "big")
    return storages[key, dtype]

  with zf.open(pkls[0]) as pf:
    return _unpickle(pf, load_storage)


def _read_legacy(f: BinaryIO, file_size: int) -> Any:
  """Reads the legacy container (torch < 1.6).

  Its object pickle precedes the storage data, whose layout depends on element
  types named only inside that pickle. A first pass records them (tensors come
  out as None), then the data is read and the pickle is read again.
  """
  magic = _unpickle(f)
  if magic != _LEGACY_MAGIC:
    raise CheckpointFormatError(
        "not a PyTorch checkpoint: a pickle without torch's legacy magic "
        "number")
  version = _unpickle(f)
  if version != _LEGACY_PROTOCOL:
    raise CheckpointFormatError(f"unsupported legacy protocol {version!r}")
  sys_info = _unpickle(f)
  if not isinstance(sys_info, dict):
    raise CheckpointFormatError("legacy sys-info record is not a dict")
  big_endian = not sys_info.get("little_endian", True)
  obj_start = f.tell()

  dtypes = {}

  def record_dtype(dtype, key, numel, view):
    del numel, view
    dtypes.setdefault(key, dtype)
    return _UNRESOLVED

  _unpickle(f, record_dtype)
  keys = _unpickle(f)
  if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
    raise CheckpointFormatError("legacy storage key list is malformed")

  # Each storage: int64 element count, then the elements. Read them all now
  # so that the second pass never moves the file position under the pickle.
  order = "big" if big_endian else "little"
  storages = {}
  for key in keys:
    if key not in dtypes:
      raise CheckpointFormatError(f"storage {key!r} listed but never used")
    pos = f.tell()
    count = int.from_bytes(f.read(8), order, signed=True)
    end = pos + 8 + count * dtypes[key].itemsize
    if count < 0 or end > file_size:
      raise CheckpointFormatError(
          f"truncated legacy checkpoint: storage {key!r} ends at byte {end} "
          f"of a {file_size}-byte file")
    storages[key] = _from_bytes(f.read(count * dtypes[key].itemsize),
                                dtypes[key], big_endian)

  def load_storage(dtype, key, numel, view):
    del dtype, numel  # The file's own count and first-seen type rule.
    if key not in storages:
      raise CheckpointFormatError(f"storage {key!r} missing from the key list")
    root = storages[key]
    if view is None:
      return root
    # A view of a larger storage: (view key, element offset, element count).
    _, offset, count = view
    if not (_is_index(offset) and _is_index(count) and
            offset + count <= root.size):
      raise CheckpointFormatError(f"invalid storage view {view!r:.100}")
    return root[offset:offset + count]

  f.seek(obj_start)
  return _unpickle(f, load_storage)


def _read_safetensors(f: BinaryIO, file_size: int) -> dict[str, np.ndarray]:
  """Reads a safetensors file."""
  header_len = int.from_bytes(f.read(8), "little")
  data_start = 8 + header_len
  if data_start > file_size:
    raise CheckpointFormatError(
        f"truncated safetensors file: header needs {header_len} bytes, "
        f"{file_size - 8} present")
  try:
    header = json.loads(f.read(header_len))
  except ValueError as e:
    raise CheckpointFormatError(f"corrupt safetensors header ({e})") from e
  if not isinstance(header, dict):
    raise CheckpointFormatError("safetensors header is not a JSON object")
  data_len = file_size - data_start
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if not isinstance(info, dict):
      raise CheckpointFormatError(f"safetensors entry {name!r} is malformed")
    dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
    if dtype is None:
      raise CheckpointFormatError(
          f"unsupported dtype {info.get('dtype')!r} for tensor {name!r}")
    shape = info.get("shape")
    offsets = info.get("data_offsets")
    if not (isinstance(shape, list) and all(_is_index(n) for n in shape) and
            isinstance(offsets, list) and len(offsets) == 2 and
            all(_is_index(o) for o in offsets)):
      raise CheckpointFormatError(
          f"invalid shape or data_offsets for tensor {name!r}")
    begin, end = offsets
    if end > data_len:
      raise CheckpointFormatError(
          f"truncated safetensors file: tensor {name!r} needs data up to byte "
          f"{end}, only {data_len} present")
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
      raise CheckpointFormatError(
          f"tensor {name!r}: data_offsets {offsets} do not fit "
          f"shape {shape} of {info['dtype']}")
    # A bytearray keeps the returned arrays writable without a second copy.
    raw = bytearray(end - begin)
    f.seek(data_start + begin)
    f.readinto(raw)
    out[name] = _from_bytes(raw, dtype, big_endian=False).reshape(shape)
  return out


def _read(f: BinaryIO, file_size: int) -> Any:
  """Detects the container from its first bytes and reads it."""
  head = f.read(264)
  f.seek(0)
  if not head:
    raise CheckpointFormatError("empty file, not a checkpoint")
  if head.startswith(b"PK"):
    kind, reader = "zip container", lambda: _read_zip(f)
  elif head.startswith(b"\x80"):
    kind, reader = "legacy container", lambda: _read_legacy(f, file_size)
  elif head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32:
    kind, reader = "safetensors file", lambda: _read_safetensors(f, file_size)
  elif head[257:262] == b"ustar":
    raise CheckpointFormatError(
        "tar-format checkpoints (torch < 0.4) are not supported")
  else:
    raise CheckpointFormatError(
        "not a checkpoint: expected a torch zip or legacy container or "
        f"safetensors, file starts with {head[:16]!r}")
  try:
    return reader()
  except CheckpointFormatError:
    raise
  except _PARSE_ERRORS as e:
    raise CheckpointFormatError(
        f"truncated or corrupt {kind} ({type(e).__name__}: {e})") from e


def read_checkpoint(path: str | os.PathLike) -> Any:
  """Reads a whole checkpoint without torch and without running its code.

  Args:
    path: a torch zip (torch >= 1.6) or legacy checkpoint, or a safetensors
      file.

  Returns:
    The file's top-level object with every tensor as a C-contiguous
    np.ndarray (bfloat16 as ml_dtypes.bfloat16) and torch dtype objects as
    TorchDtype. A safetensors file gives a dict of its tensors.

  Raises:
    CheckpointFormatError: the file is not a readable checkpoint, is
      truncated, names a pickle global outside the allowlist, or holds an
      unsupported dtype. The message names the file.
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    try:
      return _read(f, os.fstat(f.fileno()).st_size)
    except CheckpointFormatError as e:
      raise CheckpointFormatError(f"{path}: {e}") from e


def _extract_state_dict(obj: Any) -> dict[str, np.ndarray]:
  """The state dict inside a training checkpoint, or obj if it is one."""
  if not isinstance(obj, dict):
    raise CheckpointFormatError(
        f"top-level object is a {type(obj).__name__}, not a dict")
  state = obj
  if not (obj and all(isinstance(v, np.ndarray) for v in obj.values())):
    wrapped = [obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)]
    state = wrapped[0] if wrapped else obj
  bad = [k for k, v in state.items()
         if not (isinstance(k, str) and isinstance(v, np.ndarray))]
  if bad:
    raise CheckpointFormatError(
        f"state dict entries that are not tensors: {bad[:10]!r}")
  return dict(state)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads the model weights of a checkpoint as a flat name -> array dict.

  Training checkpoints that keep the weights under "model_state" (official
  MViT .pyth), "state_dict" or "model" are unwrapped; a bare state dict is
  returned as is.

  Args:
    path: a torch zip or legacy checkpoint, or a safetensors file.

  Returns:
    The state dict in the file's key order.

  Raises:
    CheckpointFormatError: as for read_checkpoint, or the state dict holds
      entries that are not tensors (named in the message).
  """
  checkpoint = read_checkpoint(path)
  try:
    return _extract_state_dict(checkpoint)
  except CheckpointFormatError as e:
    raise CheckpointFormatError(f"{os.fspath(path)}: {e}") from e
