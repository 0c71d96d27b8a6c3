"""Plain pickles of NumPy arrays (detectron2's `.pkl`), read by rebuilding arrays, not calling.

detectron2's model-zoo files are `pickle.dump`s of `{"model": {name: np.ndarray}, ...}`,
some written by Python 2. NumPy pickles an array as `_reconstruct(ndarray, (0,), b'b')`
then a BUILD with (1, shape, dtype, is_fortran, raw bytes), or from protocol 5 as
`_frombuffer(buffer, dtype, shape, order)`; a scalar as `scalar(dtype, raw bytes)`; a dtype
as `dtype(code, align, copy)` then a BUILD with its byte order. `NumpyResolver` knows
exactly these names, in `numpy.core` and NumPy 2's `numpy._core`, plus the two through
which protocol 2 writes bytes from Python 3, and plays their role: `numpy_arrays` builds
each array from the raw bytes. Nothing a file names is called. Python 2 `str` decodes as
latin-1, as `pickle.load(f, encoding='latin1')` does.
"""

from typing import Any, BinaryIO, NamedTuple

import numpy as np

from mvitv2_jax.checkpoint import limits
from mvitv2_jax.checkpoint import numpy_arrays
from mvitv2_jax.checkpoint import unpickler
from mvitv2_jax.checkpoint.limits import CheckpointFormatError, describe
from mvitv2_jax.checkpoint.numpy_arrays import show


class _Global(NamedTuple):
  """A name a NumPy pickle uses; `NumpyResolver` plays the role it stands for."""
  role: str
  name: str

  def __repr__(self):
    return self.name


_ROLES = {
    'numpy.core.multiarray._reconstruct': 'reconstruct',
    'numpy._core.multiarray._reconstruct': 'reconstruct',
    'numpy.core.numeric._frombuffer': 'frombuffer',
    'numpy._core.numeric._frombuffer': 'frombuffer',
    'numpy.core.multiarray.scalar': 'scalar',
    'numpy._core.multiarray.scalar': 'scalar',
    'numpy.ndarray': 'ndarray',
    'numpy.dtype': 'dtype',
    # Protocol 2 has no bytes opcode: Python 3 writes _codecs.encode(text, 'latin1'), or
    # bytes() for b''.
    '_codecs.encode': 'encode',
    '__builtin__.bytes': 'bytes',
    'builtins.bytes': 'bytes',
}
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, bytearray, np.ndarray})


class _Array(limits.Token):
  """The empty ndarray `_reconstruct` makes; its BUILD gives it shape, dtype and data."""

  __slots__ = ('array',)

  def __init__(self):
    self.array = None

  def __repr__(self):
    return 'numpy.ndarray' if self.array is None else f'numpy.ndarray{self.array.shape}'


class _Latin1(limits.Token):
  """Bytes that protocol 2 wrote as latin-1 text; kept as text so the data is held once."""

  __slots__ = ('text',)

  def __init__(self, text: str):
    self.text = text

  def __repr__(self):
    return f'bytes of {len(self.text):,} latin-1 characters'


def _raw(value: Any) -> Any:
  return value.text if type(value) is _Latin1 else value


def _flag(value: Any) -> bool:
  return type(value) in (bool, int) and value in (0, 1)


def _is(value: Any, *options: Any) -> bool:
  # Types first: == on an array would compare elementwise.
  return any(type(value) is type(o) and value == o for o in options)


class NumpyResolver(unpickler.Resolver):
  """NumPy's reconstructors, played by building arrays; every other global is refused."""

  def __init__(self, budget: limits.Budget):
    self._budget = budget

  def find_class(self, module: str, name: str) -> Any:
    qualified = f'{module}.{name}'
    if qualified in _ROLES:
      return _Global(_ROLES[qualified], qualified)
    return super().find_class(module, name)

  def call(self, func: Any, args: tuple) -> Any:
    role = func.role if type(func) is _Global else None
    if role == 'dtype':
      if not (len(args) == 3 and type(args[0]) is str and _flag(args[1]) and _flag(args[2])):
        raise CheckpointFormatError(f'{func} called with {show(args)}')
      return numpy_arrays.Dtype(args[0])
    if role == 'reconstruct':
      if not (args and type(args[0]) is _Global and args[0].role == 'ndarray'):
        raise CheckpointFormatError(
            f'{func} of {describe(args[0] if args else None)}, not numpy.ndarray')
      if not (len(args) == 3 and type(args[1]) is tuple and len(args[1]) == 1 and
              _is(args[1][0], 0) and _is(_raw(args[2]), b'b', 'b')):
        raise CheckpointFormatError(f'{func} called with {show(args[1:])}')
      return _Array()
    if role == 'frombuffer':
      return self._frombuffer(func, args)
    if role == 'scalar':
      if len(args) != 2:
        raise CheckpointFormatError(f'{func} called with {len(args)} arguments')
      return numpy_arrays.build(_raw(args[1]), args[0], (), 'C', self._budget)
    if role == 'encode':
      if not (len(args) == 2 and type(args[0]) is str and _is(args[1], 'latin1', 'latin-1')):
        raise CheckpointFormatError(f'{func} called with {show(args)}, not latin-1 text')
      return _Latin1(args[0])
    if role == 'bytes' and not args:
      return b''
    return super().call(func, args)

  def _frombuffer(self, func: _Global, args: tuple) -> np.ndarray:
    """_frombuffer(buffer, dtype, shape, order[, axis_order]) as NumPy >= 1.16 pickles it."""
    if len(args) not in (4, 5):
      raise CheckpointFormatError(f'{func} called with {len(args)} arguments')
    buffer, dtype, shape, order = args[:4]
    axes = args[4] if len(args) == 5 else None
    if _is(order, 'C', 'F') and axes is None:
      layout = order
    elif (_is(order, 'K') and type(shape) is tuple and type(axes) is tuple and
          all(type(a) is int for a in axes) and sorted(axes) == list(range(len(shape)))):
      layout = axes
    else:
      raise CheckpointFormatError(f'{func} with order {describe(order)}, axes {show(axes)}')
    return numpy_arrays.build(_raw(buffer), dtype, shape, layout, self._budget)

  def build(self, obj: Any, state: Any):
    if type(obj) is numpy_arrays.Dtype:
      obj.set_state(state)
    elif type(obj) is _Array:
      if obj.array is not None:
        raise CheckpointFormatError(f'pickle sets the state of {obj!r} twice')
      if not (type(state) is tuple and len(state) == 5 and type(state[0]) is int and
              state[0] == 1 and _flag(state[3])):
        raise CheckpointFormatError(
            f'numpy array state {describe(state)}, not (1, shape, dtype, is_fortran, data)')
      _, shape, dtype, fortran, raw = state
      obj.array = numpy_arrays.build(_raw(raw), dtype, shape, 'F' if fortran else 'C',
                                     self._budget)
    else:
      super().build(obj, state)


def _finish(obj: Any, budget: limits.Budget) -> Any:
  """`obj` with each array token replaced by its array; refuses tokens that are not data.

  Containers are visited once each (shared ones keep being shared); the unpickler keeps
  them at most `unpickler.MAX_DEPTH` deep, so the recursion is bounded.
  """
  done = {}

  def visit(value):
    kind = type(value)
    if kind in _PLAIN:
      return value
    if id(value) in done:
      return done[id(value)]
    if kind is _Array:
      if value.array is None:
        raise CheckpointFormatError('numpy array without its data (no BUILD)')
      out = value.array
    elif kind is _Latin1:
      budget.charge(len(value.text), 'bytes written as latin-1 text')
      try:
        out = value.text.encode('latin-1')
      except UnicodeEncodeError:
        raise CheckpointFormatError('bytes given as text hold characters past U+00FF') from None
    elif kind is list:
      for i, item in enumerate(value):
        value[i] = visit(item)
      out = value
    elif kind is dict:
      for key, item in value.items():
        value[key] = visit(item)
      out = value
    elif kind is tuple:
      items = tuple(visit(item) for item in value)
      out = value if all(a is b for a, b in zip(items, value)) else items
    else:
      raise CheckpointFormatError(f'pickle holds {describe(value)}, which is not data')
    done[id(value)] = out
    return out

  return visit(obj)


def read(f: BinaryIO, file_size: int, max_bytes: int | None) -> Any:
  """Reads a pickle of plain data and NumPy arrays (protocols 2 to 5).

  Args:
    f: the open file.
    file_size: its size in bytes.
    max_bytes: the memory cap (see `limits.max_bytes_setting`).

  Returns:
    Its object: dicts, lists, tuples, scalars and C-contiguous np.ndarrays (NumPy
    scalars as 0-d arrays).
  """
  budget = limits.Budget(file_size, max_bytes)
  obj = unpickler.load(f, file_size, budget, NumpyResolver(budget), encoding='latin-1')
  return _finish(obj, budget)
