"""What torch's pickles mean: storages, tensors, dtypes and the few functions they call.

A pickle can name any importable callable. Those torch writes become stand-ins defined
here and `TorchResolver` plays their role in `unpickler`, which calls nothing; everything
else is refused. Both torch containers (`torch_zip`, `torch_legacy`) read their pickles
through it; tensors are rebuilt as NumPy views of their storage, or copies charged to the
file's `limits.Budget` when strided.
"""

import collections
import math
import re
from typing import Any, Callable, NamedTuple

import ml_dtypes
import numpy as np

from mvitv2_jax.checkpoint import arrays
from mvitv2_jax.checkpoint import limits
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

_MAX_NDIM = 32
_STORAGE_KEY = re.compile(r"[0-9A-Za-z_.-]{1,100}")


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
  """Stand-in for a function a torch pickle calls; `TorchResolver.call` plays its role."""
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


# Classes whose instances training checkpoints pickle beside the weights (the run's
# options): read as inert `Record`s, nothing of theirs called. Qualified name -> token.
_RECORD_CLASSES = ('argparse.Namespace', 'yacs.config.CfgNode')
_SET = _Function('builtins.set')  # yacs keeps a set of deprecated keys in a CfgNode's state.


class _RecordClass(NamedTuple):
  """Stand-in for one of `_RECORD_CLASSES`."""
  name: str


class Record(dict):
  """An inert stand-in for an `argparse.Namespace` or a yacs `CfgNode` in a checkpoint.

  Its items are the object's dict items (a CfgNode's entries; none for a Namespace) and
  `state` its pickled attributes as plain data (a Namespace's options; a CfgNode's yacs
  bookkeeping), or None. `type_name` is the class's qualified name. Nothing of the class
  runs: the reader never imports argparse's or yacs's code for it.
  """
  __slots__ = ('type_name', 'state')

  def __init__(self, type_name: str):
    super().__init__()
    self.type_name, self.state = type_name, None

  def __repr__(self):
    return f'Record({self.type_name}, items={dict.__repr__(self)}, state={self.state!r})'


class _Unresolved:
  """Storage placeholder for the legacy format's first, layout-only pass."""


UNRESOLVED = _Unresolved()

# Loader signature: (dtype, key, numel, legacy view metadata) -> 1-D array.
StorageLoader = Callable[[np.dtype, str, int, Any], Any]


def _as_str(value: Any) -> Any:
  # Pickles written by Python 2 torch carry bytes where Python 3 has str.
  return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _is_index(value: Any) -> bool:
  return type(value) is int and value >= 0


def _is_c_contiguous(size: tuple, stride: tuple) -> bool:
  expected = 1
  for n, s in zip(reversed(size), reversed(stride)):
    if n != 1 and s != expected:
      return False
    expected *= n
  return True


def tensor_from_storage(storage: Any, offset: Any, size: Any, stride: Any,
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
  if math.prod(n for n in size if n) > arrays.MAX_ELEMENTS:
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


class TorchResolver(unpickler.Resolver):
  """The globals, calls and persistent ids of torch's pickles."""

  def __init__(self, budget: limits.Budget, load_storage: StorageLoader | None = None):
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
    if qualified in _RECORD_CLASSES:
      return _RecordClass(qualified)
    if qualified in ("builtins.set", "__builtin__.set"):
      return _SET
    return super().find_class(module, name)

  def new(self, cls: Any, args: tuple) -> Any:
    if type(cls) is _RecordClass and args == ():
      return Record(cls.name)
    return super().new(cls, args)

  def call(self, func: Any, args: tuple) -> Any:
    if func is _ORDERED_DICT:
      return _ordered_dict(args)
    if func is _SET:  # set([scalars]) as Python pickles it, kept as a frozenset.
      if not (len(args) == 1 and type(args[0]) is list and
              all(type(item) in unpickler._SCALARS for item in args[0])):  # pylint: disable=protected-access
        raise CheckpointFormatError(f"set called with {describe(args)}, not a list of scalars")
      return frozenset(args[0])
    arity = _ARITY.get(func) if type(func) is _Function else None
    if arity is None:
      return super().call(func, args)
    if len(args) not in arity:
      raise CheckpointFormatError(f"{func.name} called with {len(args)} arguments")
    if func in (_REBUILD_TENSOR, _REBUILD_TENSOR_V2):
      if args[0] is UNRESOLVED:
        return None
      return tensor_from_storage(*args[:4], self._budget)
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
    if type(obj) is Record and obj.state is None and type(state) is dict:
      obj.state = state  # The record's attributes, plain data.
      return
    # torch's state dicts carry per-module versions as an OrderedDict attribute.
    if (type(obj) is collections.OrderedDict and type(state) is dict and
        list(state) == ["_metadata"]):
      obj._metadata = state["_metadata"]  # pylint: disable=protected-access
      return
    super().build(obj, state)
