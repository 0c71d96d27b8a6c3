"""Runs a command under an address-space limit and reports its exit, output and peak RSS."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile

# A small Python forks the command under the limit and reports its exit and rusage. Linux
# counts the RSS of the process a command is forked and exec'ed from into its peak, so the
# command must start from this small process, not from the test process.
_WRAPPER = '''
import json, os, resource, sys
limit, report, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
pid = os.fork()
if pid == 0:
  try:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.execvp(argv[0], argv)
  except OSError as e:
    os.write(2, f"limited: cannot run {argv[0]}: {e}\\n".encode())
  os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as f:
  json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss], f)
'''


@dataclasses.dataclass
class Result:
  returncode: int  # Negative: killed by that signal (-9 also after a timeout).
  stdout: str
  stderr: str
  peak_rss_mb: float  # The command's own maximum resident set size.
  timed_out: bool

  @property
  def error_lines(self) -> list[str]:
    return [line for line in self.stderr.splitlines() if line.startswith('error:')]


def run(cmd, *, address_space_mb: int, timeout: float, env=None, cwd=None) -> Result:
  """Runs `cmd` with RLIMIT_AS at `address_space_mb`, killed after `timeout` seconds.

  Args:
    cmd: the command line; cmd[0] is looked up on PATH.
    address_space_mb: the limit, in MiB.
    timeout: seconds before the command and its wrapper are killed.
    env: the environment (default: this process's).
    cwd: the working directory.

  Returns:
    What the command did.
  """
  with tempfile.TemporaryDirectory() as tmp:
    report = os.path.join(tmp, 'report.json')
    out_path, err_path = os.path.join(tmp, 'out'), os.path.join(tmp, 'err')
    with open(out_path, 'wb') as out, open(err_path, 'wb') as err:
      proc = subprocess.Popen(
          [sys.executable, '-c', _WRAPPER, str(address_space_mb << 20), report, *cmd],
          stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
          start_new_session=True)
      try:
        proc.wait(timeout)
        timed_out = False
      except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        timed_out = True
    returncode, maxrss_kb = (-signal.SIGKILL, 0) if timed_out else _read_report(report)
    with open(out_path, 'rb') as out, open(err_path, 'rb') as err:
      return Result(returncode, out.read().decode(errors='replace'),
                    err.read().decode(errors='replace'), maxrss_kb / 1024, timed_out)


def _read_report(path: str) -> tuple[int, int]:
  if not os.path.exists(path):  # The wrapper itself failed; its stderr says why.
    raise RuntimeError('the limited-run wrapper left no report')
  with open(path) as f:
    return tuple(json.load(f))
