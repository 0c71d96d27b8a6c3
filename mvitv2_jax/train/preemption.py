"""SIGINT and SIGTERM as a request the train loop polls, so that it saves before it exits."""

import signal

import jax
from jax.experimental import multihost_utils
import numpy as np

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
  """Catches SIGINT (Ctrl-C) and SIGTERM (preemption) while installed.

  Further signals while the run is saving are absorbed: the checkpoint being written
  stays whole. SIGKILL cannot be caught; its half-written step is skipped at restore.
  """

  def __init__(self):
    self._signum = 0
    self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}

  def _handle(self, signum, frame):
    # Only record it: the handler runs between two bytecodes of the main thread,
    # possibly inside a log write, where writing to the same stream again fails.
    del frame
    if not self._signum:
      self._signum = signum

  def signal(self, at_boundary: bool) -> int:
    """The signal to stop on, or 0; all processes agree, checked at log boundaries.

    Args:
      at_boundary: whether this is a step where every process asks (a log step).

    Returns:
      This process's signal number, or on several processes the largest among
      them; 0 to go on.
    """
    if jax.process_count() == 1:
      return self._signum
    if not at_boundary:
      return 0
    return int(np.max(multihost_utils.process_allgather(np.int32(self._signum))))

  def restore(self):
    """Puts back the handlers found at construction."""
    for s, handler in self._previous.items():
      signal.signal(s, handler)
