"""The errors that stop a run with a one-line message, and the stop by a signal.

`main.py` prints a `RunError` as one `error:` line (no traceback) and exits with its
`exit_status`; `Interrupted` is not an error but ends the process the same way.
"""

# Exit statuses of main.py (see README "Train").
EXIT_ERROR = 1  # The run failed (data, checkpoint, divergence).
EXIT_USAGE = 2  # Bad command line or config: nothing was started.


class RunError(Exception):
  """A failure the user can act on; the message says what and where."""
  exit_status = EXIT_ERROR


class ConfigError(RunError, ValueError):
  """A config field has a value the trainer cannot use."""
  exit_status = EXIT_USAGE


class WorkdirBusyError(RunError):
  """Another trainer holds the workdir."""


class ConfigMismatchError(RunError):
  """The workdir holds a run of another config."""
  exit_status = EXIT_USAGE


class CheckpointError(RunError, ValueError):
  """A checkpoint cannot be read or fails its integrity record."""


class DoesNotFitError(RunError):
  """A compiled step needs more device memory than there is."""


class Diverged(RunError, FloatingPointError):
  """The loss or the params became non-finite; nothing after the last good step is kept."""


class Interrupted(Exception):
  """The run stopped on SIGINT or SIGTERM after saving a complete checkpoint.

  Attributes:
    signum: the signal.
    step: the step of the checkpoint written.
    exit_status: 128 + signum, the shell's status for a process ended by it.
  """

  def __init__(self, signum: int, step: int, message: str):
    super().__init__(message)
    self.signum = signum
    self.step = step
    self.exit_status = 128 + signum
