"""torch's zip container (torch >= 1.6): `<folder>/data.pkl` plus one record per storage.

Records are streamed and never inflated past their declared size, and the records of a
file may inflate 16x at most: torch writes them uncompressed.
"""

import io
import zipfile
from typing import Any, BinaryIO

import numpy as np

from mvitv2_jax.checkpoint import arrays
from mvitv2_jax.checkpoint import limits
from mvitv2_jax.checkpoint import torch_pickle
from mvitv2_jax.checkpoint import unpickler
from mvitv2_jax.checkpoint.limits import CheckpointFormatError, describe

# torch writes records uncompressed; recompressed weights inflate about 1.1x.
_MAX_INFLATION = 16
_INFLATION_SLACK = 1 << 20
_MAX_BYTEORDER_BYTES = 16
_READ_CHUNK = 16 << 20


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


def read(f: BinaryIO, file_size: int, max_bytes: int | None) -> Any:
  """Reads torch's zip container.

  Args:
    f: the open file.
    file_size: its size in bytes.
    max_bytes: the memory cap (see `limits.max_bytes_setting`).

  Returns:
    The object of its data.pkl, storages loaded from their records.
  """
  try:
    zf = zipfile.ZipFile(f)
  except zipfile.BadZipFile as e:
    raise CheckpointFormatError(
        f"truncated or corrupt zip container ({e})") from e
  with zf:
    return _read_records(zf, file_size, max_bytes)


def _read_records(zf: zipfile.ZipFile, file_size: int, max_bytes: int | None) -> Any:
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
    storages[key] = arrays.native_order(np.frombuffer(raw, dtype), byteorder == "big")
    return storages[key]

  data = _read_record(zf, records[pkls[0]], records[pkls[0]].file_size, budget)
  return unpickler.load(io.BytesIO(data), len(data), budget,
                        torch_pickle.TorchResolver(budget, load_storage))
