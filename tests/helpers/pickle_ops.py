"""Pickles assembled opcode by opcode, so that a file says exactly what a test needs.

Python 3's pickler writes neither what Python 2 wrote (8-bit `str` data, `numpy.core`
names, int flags) nor a file that lies (sizes, classes, nesting it would never produce).
"""

import struct

PROTO2 = b'\x80\x02'
MARK, STOP, TUPLE, EMPTY_TUPLE, REDUCE, BUILD = b'(', b'.', b't', b')', b'R', b'b'
EMPTY_DICT, SETITEM, SETITEMS, BINPERSID, NEWFALSE = b'}', b's', b'u', b'Q', b'\x89'
NONE, EMPTY_LIST, APPEND = b'N', b']', b'a'
NEWOBJ = b'\x81'


def text(value: str) -> bytes:
  """A Python 3 str (BINUNICODE)."""
  data = value.encode()
  return b'X' + struct.pack('<I', len(data)) + data


def string(value: bytes) -> bytes:
  """A Python 2 str of these bytes (SHORT_BINSTRING or BINSTRING)."""
  if len(value) < 256:
    return b'U' + bytes([len(value)]) + value
  return b'T' + struct.pack('<i', len(value)) + value


def raw_bytes(value: bytes) -> bytes:
  """A Python 3 bytes object (BINBYTES, protocol 3 and up)."""
  return b'B' + struct.pack('<I', len(value)) + value


def integer(value: int) -> bytes:
  if -2**31 <= value < 2**31:
    return b'J' + struct.pack('<i', value)
  data = value.to_bytes((value.bit_length() + 8) // 8, 'little', signed=True)
  return b'\x8a' + bytes([len(data)]) + data


def global_ref(module: str, name: str) -> bytes:
  return b'c' + f'{module}\n{name}\n'.encode()


def int_tuple(values) -> bytes:
  return MARK + b''.join(integer(v) for v in values) + TUPLE


def call(module: str, name: str, *args: bytes) -> bytes:
  """module.name(*args), each argument already pickled."""
  return global_ref(module, name) + MARK + b''.join(args) + TUPLE + REDUCE


def dict_of(items) -> bytes:
  """A dict of (pickled key, pickled value) pairs."""
  return EMPTY_DICT + MARK + b''.join(k + v for k, v in items) + SETITEMS


# --- NumPy's own pickling, written out as Python 2 numpy wrote it ---------------------


def dtype_state(order: str = '<') -> bytes:
  """The BUILD state NumPy writes for a number dtype: (3, order, None, None, None, -1, -1, 0)."""
  return (MARK + integer(3) + string(order.encode()) + NONE * 3 + integer(-1) * 2 + integer(0)
          + TUPLE)


def numpy_dtype(code: str, order: str = '<', *, state: bytes | None = None) -> bytes:
  """numpy.dtype(code, 0, 1), then a BUILD with its state (or `state`, pickled)."""
  return (call('numpy', 'dtype', string(code.encode()), integer(0), integer(1))
          + (dtype_state(order) if state is None else state) + BUILD)


def numpy_array(shape, code: str, data: bytes, *, order: str = '<', fortran: bool = False,
                cls=('numpy', 'ndarray'), core: str = 'numpy.core') -> bytes:
  """An ndarray as NumPy pickles it: _reconstruct(cls, (0,), 'b'), then its BUILD state."""
  state = (MARK + integer(1) + int_tuple(shape) + numpy_dtype(code, order)
           + (b'\x88' if fortran else NEWFALSE) + string(data) + TUPLE)
  return (call(f'{core}.multiarray', '_reconstruct', global_ref(*cls), int_tuple((0,)),
               string(b'b')) + state + BUILD)


def numpy_scalar(code: str, data: bytes, *, core: str = 'numpy.core') -> bytes:
  """A NumPy scalar (np.int64(7)): scalar(dtype, its bytes)."""
  return call(f'{core}.multiarray', 'scalar', numpy_dtype(code), string(data))
