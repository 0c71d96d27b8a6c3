"""`python -m tests.helpers.load_checkpoints PLAN REPORT`: hostile files, one fork per case.

PLAN is a JSON list of cases `{"name", "kind", "args"}`; REPORT gets, for each name, the
case's exit status, stdout, stderr and peak RSS. Run it under an address-space limit
(`tests/helpers/limited.py`): the limit holds for every case. The converter is imported
once; each case runs in a fork of this process, as `python -m` would run it after the
same imports. A fork's own peak (`wait4`) leaves out the pages it shares untouched, so
the reported peak is this process's peak at the fork plus what the case added to its
fork's RSS: never less than a fresh process's own peak for the case would be.

Kinds:
  load: `convert.load_params(PATH, 'mvitv2_t')`. Prints `error: <exception type>:
    <message>` and exits 1 when it raises one of the two errors it documents; any other
    exception prints its traceback. With a MARKER after PATH, exits 3 if any object of
    the reader's modules (mvitv2_jax.checkpoint.*) gained an attribute of that name (a
    pickle BUILD that altered the reader).
  convert: `mvitv2-convert ARGS...` (its `main`).
"""

import json
import os
import resource
import signal
import sys
import tempfile
import traceback

from mvitv2_jax import convert
from mvitv2_jax.convert import cli

TIMEOUT_S = 120


def _reader_modules() -> list:
  return [module for name, module in sorted(sys.modules.items())
          if name == 'mvitv2_jax.checkpoint' or name.startswith('mvitv2_jax.checkpoint.')]


def _altered(marker: str) -> bool:
  objects = [value for module in _reader_modules() for value in vars(module).values()]
  objects += [member for obj in objects if isinstance(obj, type) for member in vars(obj).values()]
  for obj in objects:
    try:
      if marker in vars(obj):
        return True
    except TypeError:  # No __dict__.
      pass
  return False


def load(args) -> int:
  path, marker = args[0], (args[1] if len(args) > 1 else None)
  status = 0
  try:
    convert.load_params(path, 'mvitv2_t')
  except (convert.ConversionError, convert.CheckpointFormatError) as e:
    print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
    status = 1
  if marker and _altered(marker):
    return 3
  return status


_KINDS = {'load': load, 'convert': cli.main}


def _maxrss_kb() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _case_process(kind: str, args: list, paths: dict[str, str]):
  """Runs in the fork: the case, as `python -m` would, with its own stdout and stderr."""
  status = 1
  try:
    with open(paths['start'], 'w') as f:
      f.write(str(_maxrss_kb()))  # The fork's RSS before the case.
    signal.alarm(TIMEOUT_S)  # Its default action ends a case that hangs.
    for fd, path in ((1, paths['out']), (2, paths['err'])):
      os.dup2(os.open(path, os.O_WRONLY), fd)
    status = _KINDS[kind](args)
  except SystemExit as e:  # argparse's errors.
    status = e.code if isinstance(e.code, int) else 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()  # As the interpreter would print it, to the case's stderr.
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # pylint: disable=protected-access


def run_case(kind: str, args: list, directory: str) -> dict:
  """Forks, runs one case, and reports it."""
  paths = {name: os.path.join(directory, name) for name in ('out', 'err', 'start')}
  for path in paths.values():
    open(path, 'wb').close()  # Empty, even if the case dies before it writes.
  sys.stdout.flush()
  sys.stderr.flush()
  before_kb = _maxrss_kb()
  pid = os.fork()
  if pid == 0:
    _case_process(kind, args, paths)
  _, status, usage = os.wait4(pid, 0)
  returncode = os.waitstatus_to_exitcode(status)
  with open(paths['out'], 'rb') as out, open(paths['err'], 'rb') as err:
    stdout, stderr = out.read().decode(errors='replace'), err.read().decode(errors='replace')
  with open(paths['start']) as f:
    start_kb = int(f.read() or 0)  # 0 if the fork died first: all of its peak counts.
  return {'returncode': returncode, 'timed_out': returncode == -signal.SIGALRM,
          'stdout': stdout, 'stderr': stderr,
          'peak_rss_mb': (before_kb + usage.ru_maxrss - start_kb) / 1024,
          'own_peak_rss_mb': usage.ru_maxrss / 1024}


def main(argv) -> int:
  plan_path, report_path = argv
  with open(plan_path) as f:
    plan = json.load(f)
  report = {}
  with tempfile.TemporaryDirectory() as tmp:
    for case in plan:
      report[case['name']] = run_case(case['kind'], case['args'], tmp)
  with open(report_path, 'w') as f:
    json.dump(report, f)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
