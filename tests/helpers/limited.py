"""Runs a command under an address-space limit and reports its exit, output and peak RSS."""

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time

_SET_LIMIT_AND_EXEC = (
    'import os, resource, shutil, sys\n'
    'limit = int(sys.argv[1])\n'
    'resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n'
    'os.execv(shutil.which(sys.argv[2]) or sys.argv[2], sys.argv[2:])\n')


@dataclasses.dataclass
class Result:
  returncode: int  # Negative: killed by that signal (-9 also after a timeout).
  stdout: str
  stderr: str
  peak_rss_mb: float  # The child's own maximum resident set size.
  timed_out: bool

  @property
  def error_lines(self) -> list[str]:
    return [line for line in self.stderr.splitlines() if line.startswith('error:')]


def run(cmd, *, address_space_mb: int, timeout: float, env=None, cwd=None) -> Result:
  """Runs `cmd` with RLIMIT_AS at `address_space_mb`, killed after `timeout` seconds.

  The child is reaped with wait4, so the peak RSS is its own, not that of every child
  this process ever had.
  """
  # A small Python sets the limit and execs the command (same pid): a preexec_fn would
  # fork this multithreaded process instead of spawning.
  limited_cmd = [sys.executable, '-c', _SET_LIMIT_AND_EXEC, str(address_space_mb << 20), *cmd]
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    proc = subprocess.Popen(limited_cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd)
    deadline, timed_out = time.monotonic() + timeout, False
    while True:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if time.monotonic() > deadline:
        os.kill(proc.pid, signal.SIGKILL)
        _, status, usage = os.wait4(proc.pid, 0)
        timed_out = True
        break
      time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again.
    out.seek(0)
    err.seek(0)
    return Result(proc.returncode, out.read().decode(errors='replace'),
                  err.read().decode(errors='replace'), usage.ru_maxrss / 1024, timed_out)
