"""Reads safetensors files, validated as the reference `safetensors` library does.

The header is one JSON object: tensor name -> {dtype, shape, data_offsets} plus an
optional `__metadata__` of strings. Names are unique, and the tensors tile the data
buffer exactly: sorted by offset, each starts where the previous one ends, the last at
the end of the file. Everything read is charged to the file's `limits.Budget`.
"""

import json
import math
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from mvitv2_jax.checkpoint import arrays
from mvitv2_jax.checkpoint import limits
from mvitv2_jax.checkpoint.limits import CheckpointFormatError, describe

MAX_HEADER_BYTES = 100_000_000  # The reference library's limit.
# An upper bound of the Python objects json builds per header byte.
_JSON_COST = 16
_MAX_NDIM = 64

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
  out = {}
  for key, value in pairs:
    if key in out:
      raise CheckpointFormatError(f"safetensors header repeats the key {describe(key)}")
    out[key] = value
  return out


def _parse_header(raw: bytes) -> dict[str, Any]:
  try:
    header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
  except CheckpointFormatError:
    raise
  except RecursionError:
    raise CheckpointFormatError("safetensors header nests too deeply") from None
  except ValueError as e:
    raise CheckpointFormatError(f"corrupt safetensors header ({str(e)[:200]})") from None
  if not isinstance(header, dict):
    raise CheckpointFormatError("safetensors header is not a JSON object")
  return header


def _check_metadata(metadata: Any):
  if metadata is None:
    return
  if not isinstance(metadata, dict):
    raise CheckpointFormatError(
        f"safetensors __metadata__ is {describe(metadata)}, not a JSON object")
  for key, value in metadata.items():
    if not isinstance(value, str):
      raise CheckpointFormatError(
          f"safetensors __metadata__[{describe(key)}] is {describe(value)}, not a string")


def _entry(name: str, info: Any, data_len: int) -> tuple[np.dtype, list[int], int, int]:
  """(dtype, shape, begin, end) of one tensor, checked against the data buffer."""
  if not isinstance(info, dict):
    raise CheckpointFormatError(f"safetensors entry {describe(name)} is malformed")
  code = info.get("dtype")
  dtype = _DTYPES.get(code) if isinstance(code, str) else None
  if dtype is None:
    raise CheckpointFormatError(
        f"unsupported dtype {describe(code)} for tensor {describe(name)}")
  shape, offsets = info.get("shape"), info.get("data_offsets")
  is_index = lambda v: type(v) is int and v >= 0  # pylint: disable=unnecessary-lambda-assignment
  if not (isinstance(shape, list) and len(shape) <= _MAX_NDIM and
          all(is_index(n) for n in shape) and isinstance(offsets, list) and
          len(offsets) == 2 and all(is_index(o) for o in offsets) and
          offsets[0] <= offsets[1]):
    raise CheckpointFormatError(
        f"invalid shape or data_offsets for tensor {describe(name)}")
  begin, end = offsets
  if end > data_len:
    raise CheckpointFormatError(
        f"truncated safetensors file: tensor {describe(name)} needs data up to byte "
        f"{end}, only {data_len} present")
  if end - begin != math.prod(shape) * dtype.itemsize:
    raise CheckpointFormatError(
        f"tensor {describe(name)}: data_offsets {offsets} do not fit "
        f"shape {shape} of {code}")
  return dtype, shape, begin, end


def _check_tiling(entries: dict[str, tuple], data_len: int):
  """The tensors must cover the data buffer exactly, without overlaps or gaps."""
  pos = 0
  for name, (_, _, begin, end) in sorted(entries.items(), key=lambda e: e[1][2:]):
    if begin != pos:
      problem = "overlaps the tensor before it" if begin < pos else "leaves a gap before it"
      raise CheckpointFormatError(
          f"safetensors tensor {describe(name)} at bytes [{begin}, {end}) {problem} "
          f"(data up to byte {pos} is taken)")
    pos = end
  if pos != data_len:
    raise CheckpointFormatError(
        f"safetensors data holds {data_len} bytes, its tensors cover {pos}")


def read(f: BinaryIO, file_size: int, max_bytes: int | None) -> dict[str, np.ndarray]:
  """Reads a safetensors file.

  Args:
    f: the open file.
    file_size: its size in bytes.
    max_bytes: the memory cap (see `limits.max_bytes_setting`).

  Returns:
    Tensor name -> native-order array, in the header's order.
  """
  header_len = int.from_bytes(f.read(8), "little")
  if header_len > MAX_HEADER_BYTES:
    raise CheckpointFormatError(
        f"safetensors header of {header_len:,} bytes, more than the format's "
        f"{MAX_HEADER_BYTES:,}")
  data_start = 8 + header_len
  if data_start > file_size:
    raise CheckpointFormatError(
        f"truncated safetensors file: header needs {header_len} bytes, "
        f"{file_size - 8} present")
  data_len = file_size - data_start
  budget = limits.Budget(data_len, max_bytes)
  budget.charge(_JSON_COST * header_len, "the safetensors header")
  header = _parse_header(f.read(header_len))
  _check_metadata(header.pop("__metadata__", None))
  entries = {name: _entry(name, info, data_len) for name, info in header.items()}
  _check_tiling(entries, data_len)
  out = {}
  for name, (dtype, shape, begin, end) in entries.items():
    budget.charge(end - begin, f"tensor {describe(name)}")
    # A bytearray keeps the returned arrays writable without a second copy.
    raw = bytearray(end - begin)
    f.seek(data_start + begin)
    if f.readinto(raw) != len(raw):
      raise CheckpointFormatError(f"truncated safetensors file: tensor {describe(name)}")
    out[name] = arrays.native_order(np.frombuffer(raw, dtype), big_endian=False).reshape(shape)
  return out
