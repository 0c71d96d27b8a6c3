"""Reads a checkpoint file of any supported format, picked by its first bytes.

Checkpoints downloaded from the internet are untrusted data: only regular files are
opened, nothing a file names is run, every allocation is charged to a `limits.Budget`,
and every failure is one `CheckpointFormatError` line that starts with the path.

Supported formats, told apart by content, never by file name:
  * torch's zip format (torch >= 1.6), `torch_zip`.
  * the legacy format (torch < 1.6), `torch_legacy`: a pickle of torch's magic number first.
  * safetensors, `safetensors`.
  * any other pickle (protocols 2 to 5) of plain data and NumPy arrays, such as
    detectron2's `.pkl`, `numpy_pickle`.
"""

import os
import pickle
import struct
import zipfile
import zlib
from typing import Any, BinaryIO

import numpy as np

from mvitv2_jax.checkpoint import limits
from mvitv2_jax.checkpoint import numpy_pickle
from mvitv2_jax.checkpoint import safetensors
from mvitv2_jax.checkpoint import torch_legacy
from mvitv2_jax.checkpoint import torch_zip
from mvitv2_jax.checkpoint.limits import CheckpointFormatError, describe

# Keys under which training checkpoints keep the model weights, by preference.
DEFAULT_WRAPPER_KEYS = ("model_state", "state_dict", "model")

# torch's legacy magic number as its first pickle writes it (LONG1, 10 bytes).
_LEGACY_MAGIC = b"\x8a\x0a" + torch_legacy.MAGIC.to_bytes(10, "little")
_PICKLE_PROTOCOLS = (b"\x02", b"\x03", b"\x04", b"\x05")

# What a malformed container can make the parsers raise; turned into
# CheckpointFormatError at the boundary.
_PARSE_ERRORS = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile,
                 struct.error, ValueError, TypeError, KeyError, IndexError,
                 AttributeError, OverflowError, NotImplementedError,
                 zlib.error)


def _is_pickle(head: bytes) -> bool:
  return head[:1] == b"\x80" and head[1:2] in _PICKLE_PROTOCOLS


def _is_legacy(head: bytes) -> bool:
  body = head[2:]
  if body[:1] == b"\x95":  # Protocol 4 and up open with a FRAME of 8 length bytes.
    body = body[9:]
  return _is_pickle(head) and body.startswith(_LEGACY_MAGIC)


def _read(f: BinaryIO, file_size: int, max_bytes: int | None) -> Any:
  """Detects the format from its first bytes and reads it."""
  head = f.read(264)
  f.seek(0)
  if not head:
    raise CheckpointFormatError("empty file, not a checkpoint")
  if head.startswith(b"PK"):
    kind, reader = "zip container", torch_zip.read
  elif _is_legacy(head):
    kind, reader = "legacy container", torch_legacy.read
  # Before pickles: a header length of 0x280 bytes starts as a protocol-2 pickle does.
  elif head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32:
    kind, reader = "safetensors file", safetensors.read
  elif head[257:262] == b"ustar":
    raise CheckpointFormatError(
        "tar-format checkpoints (torch < 0.4) are not supported")
  elif _is_pickle(head):
    kind, reader = "pickle", numpy_pickle.read
  else:
    raise CheckpointFormatError(
        "not a checkpoint: expected a torch zip or legacy container, safetensors or "
        f"a pickle, file starts with {head[:16]!r}")
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
    path: a torch zip (torch >= 1.6) or legacy checkpoint, a safetensors file,
      or a pickle of plain data and NumPy arrays (detectron2's .pkl).
    max_bytes: the most memory the read may allocate (default: see
      `limits.max_bytes_setting`); it never takes more than twice the tensor
      bytes the file declares (a pickle: its size) plus 16 MiB.

  Returns:
    The file's top-level object with every tensor as a C-contiguous
    np.ndarray (bfloat16 as ml_dtypes.bfloat16) and torch dtype objects as
    TorchDtype. Tensors that share a storage and lie contiguously in it are
    views of one buffer, as in torch. A safetensors file gives a dict of its
    tensors; a pickle its dicts, lists, tuples, scalars and arrays (Python 2
    `str` decoded as latin-1, NumPy scalars as 0-d arrays).

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

  A checkpoint that keeps its weights under one of `wrapper_keys` (by default
  "model_state": official MViT .pyth, "state_dict", or "model": detectron2's .pkl) is
  unwrapped, the first of them that holds a dict winning; a bare state dict is
  returned as is.

  Args:
    path: any file `read` reads.
    max_bytes: as for `read`.
    wrapper_keys: keys under which a checkpoint may keep its state dict, by preference.

  Returns:
    The state dict in the file's key order.

  Raises:
    CheckpointFormatError: as for `read`, or the state dict holds
      entries that are not tensors (named in the message).
  """
  obj = read(path, max_bytes=max_bytes)
  try:
    return _extract_state_dict(obj, wrapper_keys)
  except CheckpointFormatError as e:
    raise CheckpointFormatError(f"{os.fspath(path)}: {e}") from e
