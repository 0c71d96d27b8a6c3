"""NumPy arrays built from the raw bytes a pickle gives, within the read's budget.

A NumPy pickle names an array's dtype by code ('f4', 'i8', ...) with its byte order set by
a BUILD, and gives its shape and raw bytes. Here the shape is checked and the bytes
charged to the `limits.Budget` before a buffer of the array's own is allocated; the data
is copied into it and swapped to native byte order in place. Only numbers and bools are
read: an object array would be a list of arbitrary pickled objects.
"""

import math
import sys
from typing import Any

import numpy as np

from mvitv2_jax.checkpoint import arrays
from mvitv2_jax.checkpoint import limits
from mvitv2_jax.checkpoint.limits import CheckpointFormatError, describe

MAX_NDIM = 64  # NumPy's own limit.
_CODES = ('b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4', 'f8')
_DTYPES = {code: np.dtype(code) for code in _CODES}
# A dtype's byte order as NumPy pickles it -> big-endian ('|': one-byte types).
_BIG_ENDIAN = {'<': False, '>': True, '=': sys.byteorder == 'big', '|': False}
# A number type's dtype state but its byte order: version 3, no subarray, names or fields.
_NUMBER_STATE = (3, None, None, None, -1, -1, 0)
_FILL_CHUNK = 1 << 20


def show(value: Any) -> str:
  """A flat tuple of short scalars as its repr (shapes, states), anything else described."""
  if type(value) is tuple and len(value) <= MAX_NDIM and all(
      v is None or type(v) in (bool, int, float) or (type(v) in (str, bytes) and len(v) <= 16)
      for v in value):
    text = repr(value)
    return text if len(text) <= 100 else text[:100] + '...'
  return describe(value)


class Dtype(limits.Token):
  """numpy.dtype(code) as a pickle makes it: usable once a BUILD has set its byte order."""

  __slots__ = ('code', 'dtype', 'big_endian')

  def __init__(self, code: str):
    if code.startswith('O'):
      raise CheckpointFormatError(
          f'numpy dtype {describe(code)} holds Python objects; only arrays of numbers are read')
    if code not in _DTYPES:
      raise CheckpointFormatError(f'unsupported numpy dtype {describe(code)}')
    self.code, self.dtype, self.big_endian = code, _DTYPES[code], None

  def __repr__(self):
    return f'numpy.dtype({self.code!r})'

  def set_state(self, state: Any):
    """Applies the BUILD state NumPy writes for a number type: (3, order, None, ..., 0)."""
    if self.big_endian is not None:
      raise CheckpointFormatError(f'pickle sets the state of {self!r} twice')
    plain = (type(state) is tuple and len(state) == 8 and type(state[1]) is str and
             state[1] in _BIG_ENDIAN and
             all(type(v) is type(w) and v == w
                 for v, w in zip(state[:1] + state[2:], _NUMBER_STATE)))
    if not plain:
      raise CheckpointFormatError(
          f'{self!r} with state {show(state)}, not that of a plain number type')
    if state[1] == '|' and self.dtype.itemsize > 1:
      raise CheckpointFormatError(f'{self!r} of {self.dtype.itemsize} bytes without a byte order')
    self.big_endian = _BIG_ENDIAN[state[1]]


def _dtype(value: Any) -> Dtype:
  if type(value) is not Dtype:
    raise CheckpointFormatError(f'numpy array of dtype {describe(value)}, not a numpy.dtype')
  if value.big_endian is None:
    raise CheckpointFormatError(f'{value!r} used before its state is set')
  return value


def _shape(value: Any) -> tuple[int, ...]:
  if not (type(value) is tuple and len(value) <= MAX_NDIM and
          all(type(n) is int and n >= 0 for n in value)):
    raise CheckpointFormatError(f'invalid numpy array shape {show(value)}')
  if math.prod(n for n in value if n) > arrays.MAX_ELEMENTS:
    raise CheckpointFormatError(f'numpy array of shape {show(value)} is too large')
  return value


def _data_length(raw: Any) -> int:
  # str is latin-1 text: what Python 2 wrote, and what protocol 2 writes bytes as.
  if type(raw) in (bytes, bytearray, str):
    return len(raw)
  raise CheckpointFormatError(f'numpy array data is {describe(raw)}, not bytes')


def _fill(out: bytearray, raw: bytes | bytearray | str):
  """Copies `raw` into `out` (of its length); text goes in chunks, never whole as bytes."""
  view = memoryview(out)
  if type(raw) is not str:
    view[:] = raw
    return
  for start in range(0, len(raw), _FILL_CHUNK):
    try:
      view[start:start + _FILL_CHUNK] = raw[start:start + _FILL_CHUNK].encode('latin-1')
    except UnicodeEncodeError:
      raise CheckpointFormatError(
          'numpy array data given as text holds characters past U+00FF') from None


def build(raw: Any, dtype: Any, shape: Any, layout: Any, budget: limits.Budget) -> np.ndarray:
  """A C-contiguous array of its own buffer from a pickle's raw data.

  Args:
    raw: the data: bytes, bytearray or latin-1 text.
    dtype: a `Dtype` whose state is set.
    shape: the array's shape, as the pickle gives it.
    layout: 'C' or 'F' for the data's order, or a permutation of the axes (NumPy's 'K'
      order): the data is C-ordered in shape `shape`, the array its transpose by it.
    budget: charged before the buffer, and a C-order copy, are allocated.

  Returns:
    The array, in native byte order and writable.
  """
  dtype, shape = _dtype(dtype), _shape(shape)
  nbytes = math.prod(shape) * dtype.dtype.itemsize
  budget.charge(nbytes, f'a numpy array of shape {show(shape)} and dtype {dtype.code} '
                        f'({nbytes:,} bytes)')
  have = _data_length(raw)
  if have != nbytes:
    raise CheckpointFormatError(
        f'numpy array of shape {show(shape)} and dtype {dtype.code} takes {nbytes:,} bytes; '
        f'its data has {have:,}')
  buffer = bytearray(nbytes)
  _fill(buffer, raw)
  flat = arrays.native_order(np.frombuffer(buffer, dtype.dtype), dtype.big_endian)
  if layout == 'C':
    return flat.reshape(shape)
  if layout == 'F':
    view = flat.reshape(shape[::-1]).T
  else:
    view = flat.reshape(shape).transpose(layout)
  if view.flags.c_contiguous:
    return view
  budget.charge(nbytes, f'a numpy array of shape {show(view.shape)} copied to C order')
  return np.ascontiguousarray(view)
