"""What a checkpoint file can make the reader do: bounded memory, bounded messages, no blocking.

Every reader charges the memory it is about to allocate to a `Budget` made for the file.
The budget is twice the tensor bytes the file declares (its storages are read once and
a strided view may be copied once) plus a fixed slack for its pickle and small expanded
buffers, never more than a cap: `max_bytes`, else $MVITV2_MAX_CHECKPOINT_BYTES, else
DEFAULT_MAX_BYTES.
"""

import os
import stat
from typing import Any, BinaryIO

DEFAULT_MAX_BYTES = 32 << 30
MAX_BYTES_ENV = 'MVITV2_MAX_CHECKPOINT_BYTES'
SLACK_BYTES = 16 << 20
DECLARED_FACTOR = 2
_DESCRIBE_WIDTH = 60


class CheckpointFormatError(ValueError):
  """The file is not a checkpoint that can be read safely."""


class Token:
  """Base of the mutable stand-ins a reader makes for what a file names; shown by repr."""

  __slots__ = ()


def max_bytes_setting(max_bytes: int | None = None) -> int:
  """The cap on what one read may allocate: `max_bytes`, else the environment's, else 32 GiB."""
  if max_bytes is None:
    raw = os.environ.get(MAX_BYTES_ENV)
    if raw is None:
      return DEFAULT_MAX_BYTES
    try:
      max_bytes = int(raw)
    except ValueError:
      raise CheckpointFormatError(
          f'{MAX_BYTES_ENV}={describe(raw)} is not a number of bytes') from None
  if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
    raise CheckpointFormatError(f'max_bytes must be a positive number of bytes, not '
                                f'{describe(max_bytes)}')
  return max_bytes


class Budget:
  """The memory one read of one file may still allocate."""

  def __init__(self, declared: int, max_bytes: int | None = None):
    """Sets the limit from the tensor bytes the file declares.

    Args:
      declared: storage bytes the container declares (and holds, or inflates to).
      max_bytes: the cap (see `max_bytes_setting`).
    """
    cap = max_bytes_setting(max_bytes)
    own = SLACK_BYTES + DECLARED_FACTOR * declared
    self.limit = min(cap, own)
    self._why = (f'the cap ({MAX_BYTES_ENV} or max_bytes)' if cap < own else
                 f'{DECLARED_FACTOR}x the {declared:,} tensor bytes it declares + '
                 f'{SLACK_BYTES >> 20} MiB')
    self.used = 0

  def charge(self, nbytes: int, what: str):
    """Counts `nbytes` about to be allocated for `what`; raises past the limit."""
    self.used += nbytes
    if self.used > self.limit:
      raise CheckpointFormatError(
          f'reading {what} would take more than the {self.limit:,} bytes this file may use '
          f'({self._why})')


def describe(value: Any) -> str:
  """A short one-line description of a value read from a file, for error messages.

  Strings, bytes and numbers are shown (truncated); containers only by type and length,
  since a pickle can make their repr exponentially long.
  """
  if isinstance(value, (str, bytes)):
    text = repr(value[:_DESCRIBE_WIDTH])
    return text + '...' if len(value) > _DESCRIBE_WIDTH else text
  if type(value) is int and value.bit_length() > 128:
    return f'an integer of {value.bit_length()} bits'
  if value is None or type(value) in (bool, int, float):
    return repr(value)
  if isinstance(value, Token) or (isinstance(value, tuple) and hasattr(type(value), '_fields')):
    return repr(value)[:_DESCRIBE_WIDTH]  # A reader's own token.
  if type(value) is tuple or isinstance(value, (list, dict)):
    return f'a {type(value).__name__} of {len(value)} items'
  return f'a {type(value).__name__}'


_KINDS = ((stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO (named pipe)'),
          (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
          (stat.S_ISSOCK, 'a socket'))


def _require_regular(mode: int):
  if not stat.S_ISREG(mode):
    kind = next((name for test, name in _KINDS if test(mode)), 'not a file')
    raise OSError(0, f'{kind}, not a regular file')


def open_regular(path: str | os.PathLike) -> BinaryIO:
  """Opens a regular file for reading in binary mode.

  FIFOs, devices, sockets and directories are refused before they are opened (opening a
  FIFO blocks until a writer appears), and again after, for a file swapped in between.

  Raises:
    OSError: with `strerror` saying what the path is instead, or the system's reason.
  """
  _require_regular(os.stat(path).st_mode)
  fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
  try:
    _require_regular(os.fstat(fd).st_mode)
    os.set_blocking(fd, True)
    return os.fdopen(fd, 'rb')
  except BaseException:
    os.close(fd)
    raise
