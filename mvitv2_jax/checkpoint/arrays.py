"""What the readers share when raw bytes become arrays: a size bound and byte order."""

import sys

import numpy as np

# No real tensor comes near this; it keeps element counts far from int64 overflow.
MAX_ELEMENTS = 1 << 56


def native_order(arr: np.ndarray, big_endian: bool) -> np.ndarray:
  """`arr` (over a writable buffer, in its file's byte order) swapped in place to native."""
  if arr.dtype.itemsize > 1 and big_endian != (sys.byteorder == 'big'):
    arr.byteswap(inplace=True)
  return arr
