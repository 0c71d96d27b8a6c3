"""A one-line download progress bar on stderr (a plain start and end line when not a terminal)."""

import sys
import time
from typing import TextIO

_INTERVAL_S = 0.2  # Redraw at most this often: a fast local copy would flood the terminal.
_WIDTH = 30


def _megabytes(n: int) -> str:
  return f'{n / 1e6:,.1f} MB'


class Progress:
  """Reports bytes received for one file.

  Args:
    label: what is downloaded (the URL).
    total: its size in bytes, or None if the server did not say.
    start: bytes already on disk (a resumed download).
    stream: where to write (default stderr).
  """

  def __init__(self, label: str, total: int | None, start: int = 0,
               stream: TextIO | None = None):
    self.stream = stream or sys.stderr
    self.total, self.done, self.start = total, start, start
    self.began = self.last = time.monotonic()
    self.live = self.stream.isatty()
    resumed = f', resuming at {_megabytes(start)}' if start else ''
    size = _megabytes(total) if total is not None else 'size unknown'
    print(f'Downloading {label} ({size}{resumed})', file=self.stream, flush=True)

  def update(self, nbytes: int):
    self.done += nbytes
    now = time.monotonic()
    if self.live and now - self.last >= _INTERVAL_S:
      self.last = now
      self._draw(now)

  def _draw(self, now: float):
    rate = (self.done - self.start) / max(now - self.began, 1e-6)
    if self.total:
      filled = int(_WIDTH * self.done / self.total)
      bar = f'[{"#" * filled}{"." * (_WIDTH - filled)}] {self.done / self.total:4.0%} '
    else:
      bar = ''
    self.stream.write(f'\r  {bar}{_megabytes(self.done)}  {_megabytes(int(rate))}/s  ')
    self.stream.flush()

  def close(self):
    now = time.monotonic()
    if self.live:
      self._draw(now)
      self.stream.write('\n')
    print(f'  received {_megabytes(self.done - self.start)} in {now - self.began:.1f} s',
          file=self.stream, flush=True)
