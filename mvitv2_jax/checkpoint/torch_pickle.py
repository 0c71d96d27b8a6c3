"""Reads PyTorch checkpoints into NumPy without torch, without running code, within bounds.

Checkpoints downloaded from the internet are untrusted data, and a pickle can name any
importable callable. The pickles here run in `unpickler`, which calls nothing: the few
globals torch writes become stand-ins defined in this module and everything else is
refused. Every allocation is charged to a `limits.Budget` for the file, so memory stays
within a small multiple of the tensor bytes the file declares.

Supported containers:
  * torch's zip format (torch >= 1.6): ``<folder>/data.pkl`` plus raw storage
    records ``<folder>/data/<key>``, stored or deflated.
  * the legacy format (torch < 1.6): five pickles followed by raw storages.
  * safetensors (`safetensors`): a JSON header followed by one data buffer.
"""

import collections
import io
import math
import os
import pickle
import re
import struct
import sys
import zipfile
import zlib
from typing import Any, BinaryIO, Callable, NamedTuple

import ml_dtypes
import numpy as np

from mvitv2_jax.checkpoint import limits
from mvitv2_jax.checkpoint import safetensors
from mvitv2_jax.checkpoint import unpickler
from mvitv2_jax.checkpoint.limits import CheckpointFormatError, describe

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

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
# Keys under which training checkpoints keep the model weights, by preference.
DEFAULT_WRAPPER_KEYS = ("model_state", "state_dict", "model")
_MAX_NDIM = 32
_MAX_ELEMENTS = 1 << 56
# torch writes records uncompressed; recompressed weights inflate about 1.1x.
_MAX_INFLATION = 16
_INFLATION_SLACK = 1 << 20
_MAX_BYTEORDER_BYTES = 16
_READ_CHUNK = 16 << 20
_STORAGE_KEY = re.compile(r"[0-9A-Za-z_.-]{1,100}")

# What a malformed container can make the parsers raise; turned into
# CheckpointFormatError at the boundary.
_PARSE_ERRORS = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile,
                 struct.error, ValueError, TypeError, KeyError, IndexError,
                 AttributeError, OverflowError, NotImplementedError,
                 zlib.error)


class _StorageType(NamedTuple):
  """Stand-in for a torch storage class; only its element type matters."""
  name: str
  dtype: np.dtype


class TorchDtype(NamedTuple):
  """Stand-in for a torch dtype object (e.g. ``torch.float32``)."""
  name: str
  numpy: np.dtype

  def __repr__(self):
    return f"torch.{self.name}"


class _Function(NamedTuple):
  """Stand-in for a function a torch pickle calls; `_TorchResolver.call` plays its role."""
  name: str

  def __repr__(self):
    return self.name


_ORDERED_DICT = _Function("collections.OrderedDict")
_REBUILD_TENSOR = _Function("torch._utils._rebuild_tensor")
_REBUILD_TENSOR_V2 = _Function("torch._utils._rebuild_tensor_v2")
_REBUILD_PARAMETER = _Function("torch._utils._rebuild_parameter")
_REBUILD_PARAMETER_STATE = _Function("torch._utils._rebuild_parameter_with_state")
_FUNCTIONS = {f.name: f for f in (_ORDERED_DICT, _REBUILD_TENSOR, _REBUILD_TENSOR_V2,
                                  _REBUILD_PARAMETER, _REBUILD_PARAMETER_STATE)}
# Argument counts each function takes.
_ARITY = {_REBUILD_TENSOR: (4,), _REBUILD_TENSOR_V2: (6, 7), _REBUILD_PARAMETER: (3,),
          _REBUILD_PARAMETER_STATE: (4,)}


class _Unresolved:
  """Storage placeholder for the legacy format's first, layout-only pass."""


_UNRESOLVED = _Unresolved()

# Loader signature: (dtype, key, numel, legacy view metadata) -> 1-D array.
_StorageLoader = Callable[[np.dtype, str, int, Any], Any]


def _as_str(value: Any) -> Any:
  # Pickles written by Python 2 torch carry bytes where Python 3 has str.
  return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _is_index(value: Any) -> bool:
  return type(value) is int and value >= 0


def _native(arr: np.ndarray, big_endian: bool) -> np.ndarray:
  """`arr` (over a writable buffer) in native byte order, swapped in place."""
  if arr.dtype.itemsize > 1 and big_endian != (sys.byteorder == "big"):
    arr.byteswap(inplace=True)
  return arr


def _is_c_contiguous(size: tuple, stride: tuple) -> bool:
  expected = 1
  for n, s in zip(reversed(size), reversed(stride)):
    if n != 1 and s != expected:
      return False
    expected *= n
  return True


def _tensor_from_storage(storage: Any, offset: Any, size: Any, stride: Any,
                         budget: limits.Budget) -> np.ndarray:
  """The view a torch tensor takes of its storage: a view if contiguous, else a copy."""
  if not (isinstance(storage, np.ndarray) and storage.ndim == 1):
    raise CheckpointFormatError(f"tensor rebuilt from {describe(storage)}, not a storage")
  if not (type(size) in (tuple, list) and type(stride) in (tuple, list) and
          len(size) == len(stride) <= _MAX_NDIM and _is_index(offset) and
          all(_is_index(v) for v in (*size, *stride))):
    raise CheckpointFormatError(
        f"invalid tensor layout: offset {describe(offset)}, size {describe(size)}, "
        f"stride {describe(stride)}")
  size, stride = tuple(size), tuple(stride)
  if math.prod(n for n in size if n) > _MAX_ELEMENTS:
    raise CheckpointFormatError(f"tensor of size {size} is too large")
  numel = math.prod(size)
  if numel == 0:
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise CheckpointFormatError(
        f"tensor with offset {offset}, size {size}, stride {stride} reaches "
        f"element {last} of a storage of {storage.size} elements")
  if _is_c_contiguous(size, stride):
    return storage[offset:offset + numel].reshape(size)
  budget.charge(numel * storage.itemsize,
                f"a strided tensor of size {size} ({numel * storage.itemsize:,} bytes copied "
                f"from a storage of {storage.size:,} elements)")
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride])
  return view.copy()


def _ordered_dict(args: tuple) -> collections.OrderedDict:
  """OrderedDict() as Python 3 pickles it, or OrderedDict([[k, v], ...]) as Python 2 did."""
  out = collections.OrderedDict()
  if not args:
    return out
  items = args[0]
  if not (len(args) == 1 and type(items) is list and
          all(type(p) in (list, tuple) and len(p) == 2 for p in items)):
    raise CheckpointFormatError(
        f"OrderedDict called with {describe(args)}, not a list of pairs")
  for key, value in items:
    unpickler.check_key(key)
    out[key] = value
  return out


class _TorchResolver(unpickler.Resolver):
  """The globals, calls and persistent ids of torch's pickles."""

  def __init__(self, budget: limits.Budget, load_storage: _StorageLoader | None = None):
    self._budget = budget
    self._load_storage = load_storage

  def find_class(self, module: str, name: str) -> Any:
    qualified = f"{module}.{name}"
    if qualified in _FUNCTIONS:
      return _FUNCTIONS[qualified]
    if module in ("torch", "torch.storage") and name.endswith("Storage"):
      if name not in _STORAGE_DTYPES:
        raise CheckpointFormatError(f"unsupported storage dtype {qualified}")
      return _StorageType(name, _STORAGE_DTYPES[name])
    if module == "torch" and name in _TORCH_DTYPES:
      return TorchDtype(name, _TORCH_DTYPES[name])
    return super().find_class(module, name)

  def call(self, func: Any, args: tuple) -> Any:
    if func is _ORDERED_DICT:
      return _ordered_dict(args)
    arity = _ARITY.get(func) if type(func) is _Function else None
    if arity is None:
      return super().call(func, args)
    if len(args) not in arity:
      raise CheckpointFormatError(f"{func.name} called with {len(args)} arguments")
    if func in (_REBUILD_TENSOR, _REBUILD_TENSOR_V2):
      if args[0] is _UNRESOLVED:
        return None
      return _tensor_from_storage(*args[:4], self._budget)
    data = args[0]  # A Parameter is its data here; the rest is autograd state.
    if not (data is None or isinstance(data, np.ndarray)):
      raise CheckpointFormatError(f"{func.name} of {describe(data)}, not a tensor")
    return data

  def persistent_load(self, pid: Any) -> Any:
    if not (type(pid) is tuple and len(pid) in (5, 6) and _as_str(pid[0]) == "storage"):
      raise CheckpointFormatError(f"unexpected persistent id {describe(pid)}")
    if self._load_storage is None:
      raise CheckpointFormatError(
          "storage referenced outside the checkpoint's object pickle")
    storage_type, key, numel = pid[1], _as_str(pid[2]), pid[4]
    if type(storage_type) is not _StorageType:
      raise CheckpointFormatError(
          f"persistent id names {describe(storage_type)}, not a storage type")
    if not (type(key) is str and _STORAGE_KEY.fullmatch(key) and _is_index(numel)):
      raise CheckpointFormatError(
          f"invalid storage reference: key {describe(key)}, size {describe(numel)}")
    view = pid[5] if len(pid) == 6 else None
    if view is not None and not (type(view) is tuple and len(view) == 3 and
                                 _is_index(view[1]) and _is_index(view[2])):
      raise CheckpointFormatError(f"invalid storage view {describe(view)}")
    return self._load_storage(storage_type.dtype, key, numel, view)

  def build(self, obj: Any, state: Any):
    # torch's state dicts carry per-module versions as an OrderedDict attribute.
    if (type(obj) is collections.OrderedDict and type(state) is dict and
        list(state) == ["_metadata"]):
      obj._metadata = state["_metadata"]  # pylint: disable=protected-access
      return
    super().build(obj, state)


def _read_record(zf: zipfile.ZipFile, info: zipfile.ZipInfo, nbytes: int,
                 budget: limits.Budget) -> bytearray:
  """The first `nbytes` of a zip record, streamed: it never inflates past them."""
  budget.charge(nbytes, f"record {info.filename}")
  out = bytearray(nbytes)
  view, pos = memoryview(out), 0
  with zf.open(info) as f:
    while pos < nbytes:
      chunk = f.read(min(nbytes - pos, _READ_CHUNK))
      if not chunk:
        raise CheckpointFormatError(
            f"record {info.filename} ends after {pos:,} of its {nbytes:,} bytes")
      view[pos:pos + len(chunk)] = chunk
      pos += len(chunk)
  return out


def _check_zip_directory(infos: list[zipfile.ZipInfo], file_size: int):
  """Refuses duplicate, encrypted, overlapping and over-inflating records."""
  names = {info.filename for info in infos}
  if len(names) != len(infos):
    raise CheckpointFormatError("zip container lists a record twice")
  for info in infos:
    if info.flag_bits & 0x1:
      raise CheckpointFormatError(f"zip record {info.filename} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
      raise CheckpointFormatError(
          f"zip record {info.filename} uses compression method {info.compress_type}; "
          "torch writes records uncompressed")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
      raise CheckpointFormatError(f"zip record {info.filename} has inconsistent sizes")
  if sum(info.compress_size for info in infos) > file_size:
    raise CheckpointFormatError(
        "zip records claim more bytes than the file holds (overlapping records)")
  deflated = [info for info in infos if info.compress_type == zipfile.ZIP_DEFLATED]
  inflated = sum(info.file_size for info in deflated)
  packed = sum(info.compress_size for info in deflated)
  if inflated > _MAX_INFLATION * packed + _INFLATION_SLACK:
    raise CheckpointFormatError(
        f"zip records inflate to {inflated:,} bytes from {packed:,}: refusing a zip bomb "
        "(torch writes records uncompressed)")


def _read_zip(f: BinaryIO, file_size: int, max_bytes: int | None) -> Any:
  """Reads torch's zip container (torch >= 1.6)."""
  try:
    zf = zipfile.ZipFile(f)
  except zipfile.BadZipFile as e:
    raise CheckpointFormatError(
        f"truncated or corrupt zip container ({e})") from e
  with zf:
    return _read_zip_records(zf, file_size, max_bytes)


def _read_zip_records(zf: zipfile.ZipFile, file_size: int, max_bytes: int | None) -> Any:
  """Unpickles data.pkl, loading storages from their records on demand."""
  infos = zf.infolist()
  _check_zip_directory(infos, file_size)
  records = {info.filename: info for info in infos}
  # Everything sits under one folder whose name depends on the saver.
  pkls = [n for n in records if n.count("/") == 1 and n.endswith("/data.pkl")]
  if len(pkls) != 1:
    raise CheckpointFormatError(
        "zip archive is not a PyTorch checkpoint (no single <folder>/data.pkl)")
  prefix = pkls[0][:-len("data.pkl")]
  budget = limits.Budget(
      sum(i.file_size for n, i in records.items() if n.startswith(prefix + "data/")),
      max_bytes)
  byteorder = "little"
  if prefix + "byteorder" in records:
    info = records[prefix + "byteorder"]
    if info.file_size > _MAX_BYTEORDER_BYTES:
      raise CheckpointFormatError(
          f"byteorder record of {info.file_size:,} bytes, not 'little' or 'big'")
    byteorder = _read_record(zf, info, info.file_size, budget).decode("ascii", "replace")
  if byteorder not in ("little", "big"):
    raise CheckpointFormatError(f"unknown byteorder record {describe(byteorder)}")
  storages = {}

  def load_storage(dtype, key, numel, view):
    del view  # Only the legacy format has view metadata.
    if key in storages:
      if storages[key].dtype != dtype or storages[key].size != numel:
        raise CheckpointFormatError(f"storage {key} is referenced with two layouts")
      return storages[key]
    name = f"{prefix}data/{key}"
    if name not in records:
      raise CheckpointFormatError(f"missing storage record {name}")
    need = numel * dtype.itemsize
    if records[name].file_size < need:
      raise CheckpointFormatError(
          f"storage record {name} holds {records[name].file_size} bytes, {need} expected")
    raw = _read_record(zf, records[name], need, budget)
    storages[key] = _native(np.frombuffer(raw, dtype), byteorder == "big")
    return storages[key]

  data = _read_record(zf, records[pkls[0]], records[pkls[0]].file_size, budget)
  return unpickler.load(io.BytesIO(data), len(data), budget,
                        _TorchResolver(budget, load_storage))


def _read_legacy(f: BinaryIO, file_size: int, max_bytes: int | None) -> Any:
  """Reads the legacy container (torch < 1.6).

  Its object pickle precedes the storage data, whose layout depends on element
  types named only inside that pickle. A first pass records them (tensors come
  out as None), then the data is read and the pickle is read again.
  """
  budget = limits.Budget(file_size, max_bytes)

  def unpickle(load_storage=None):
    return unpickler.load(f, file_size - f.tell(), budget,
                          _TorchResolver(budget, load_storage))

  magic = unpickle()
  if type(magic) is not int or magic != _LEGACY_MAGIC:
    raise CheckpointFormatError(
        "not a PyTorch checkpoint: a pickle without torch's legacy magic "
        "number")
  version = unpickle()
  if type(version) is not int or version != _LEGACY_PROTOCOL:
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
    return _UNRESOLVED

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
    storages[key] = _native(np.frombuffer(raw, dtypes[key]), big_endian)

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


def _read(f: BinaryIO, file_size: int, max_bytes: int | None) -> Any:
  """Detects the container from its first bytes and reads it."""
  head = f.read(264)
  f.seek(0)
  if not head:
    raise CheckpointFormatError("empty file, not a checkpoint")
  if head.startswith(b"PK"):
    kind, reader = "zip container", _read_zip
  elif head.startswith(b"\x80"):
    kind, reader = "legacy container", _read_legacy
  elif head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32:
    kind, reader = "safetensors file", safetensors.read
  elif head[257:262] == b"ustar":
    raise CheckpointFormatError(
        "tar-format checkpoints (torch < 0.4) are not supported")
  else:
    raise CheckpointFormatError(
        "not a checkpoint: expected a torch zip or legacy container or "
        f"safetensors, file starts with {head[:16]!r}")
  try:
    return reader(f, file_size, max_bytes)
  except CheckpointFormatError:
    raise
  except _PARSE_ERRORS as e:
    reason = (str(e).splitlines() or [""])[0][:200]
    raise CheckpointFormatError(
        f"truncated or corrupt {kind} ({type(e).__name__}: {reason})") from e


def read(path: str | os.PathLike, *, max_bytes: int | None = None) -> Any:
  """Reads a whole checkpoint without torch and without running its code.

  Args:
    path: a torch zip (torch >= 1.6) or legacy checkpoint, or a safetensors
      file.
    max_bytes: the most memory the read may allocate (default: see
      `limits.max_bytes_setting`); it never takes more than twice the tensor
      bytes the file declares plus 16 MiB.

  Returns:
    The file's top-level object with every tensor as a C-contiguous
    np.ndarray (bfloat16 as ml_dtypes.bfloat16) and torch dtype objects as
    TorchDtype. Tensors that share a storage and lie contiguously in it are
    views of one buffer, as in torch. A safetensors file gives a dict of its
    tensors.

  Raises:
    CheckpointFormatError: the file is missing, not a regular file, not a
      readable checkpoint, truncated, names a pickle global outside the
      allowlist, holds an unsupported dtype, or needs more memory than
      allowed. The one-line message names the file.
  """
  path = os.fspath(path)
  try:
    with limits.open_regular(path) as f:
      return _read(f, os.fstat(f.fileno()).st_size, max_bytes)
  except CheckpointFormatError as e:
    raise CheckpointFormatError(f"{path}: {e}") from e
  except OSError as e:
    raise CheckpointFormatError(f"{path}: {e.strerror or e}") from e


def _extract_state_dict(obj: Any, wrapper_keys: tuple[str, ...]) -> dict[str, np.ndarray]:
  """The state dict inside a training checkpoint, or obj if it is one."""
  if not isinstance(obj, dict):
    raise CheckpointFormatError(
        f"top-level object is {describe(obj)}, not a dict")
  state = obj
  if not (obj and all(isinstance(v, np.ndarray) for v in obj.values())):
    wrapped = [obj[k] for k in wrapper_keys if isinstance(obj.get(k), dict)]
    state = wrapped[0] if wrapped else obj
  bad = [k for k, v in state.items()
         if not (isinstance(k, str) and isinstance(v, np.ndarray))]
  if bad:
    raise CheckpointFormatError(
        f"state dict entries that are not tensors ({len(bad)}): "
        f"{', '.join(describe(k) for k in bad[:10])}")
  return dict(state)


def read_state_dict(path: str | os.PathLike, *, max_bytes: int | None = None,
                    wrapper_keys: tuple[str, ...] = DEFAULT_WRAPPER_KEYS
                    ) -> dict[str, np.ndarray]:
  """Reads the model weights of a checkpoint as a flat name -> array dict.

  Training checkpoints that keep the weights under one of `wrapper_keys`
  ("model_state": official MViT .pyth, "state_dict", "model") are unwrapped, the
  first key present winning; a bare state dict is returned as is.

  Args:
    path: a torch zip or legacy checkpoint, or a safetensors file.
    max_bytes: as for `read`.
    wrapper_keys: keys under which a checkpoint may keep its state dict, by preference.

  Returns:
    The state dict in the file's key order.

  Raises:
    CheckpointFormatError: as for `read`, or the state dict holds
      entries that are not tensors (named in the message).
  """
  checkpoint = read(path, max_bytes=max_bytes)
  try:
    return _extract_state_dict(checkpoint, wrapper_keys)
  except CheckpointFormatError as e:
    raise CheckpointFormatError(f"{os.fspath(path)}: {e}") from e
