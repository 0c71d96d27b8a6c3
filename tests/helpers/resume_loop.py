"""Short resumed demo runs in a loop, under CPU load, counting exit statuses (tests only).

Usage: python -m tests.helpers.resume_loop --runs 20 --load 2 [--checkout DIR] [--data_dir D]

Each run is `main.py --config=configs/demo.py` on one workdir with two more steps than
the last: it restores, trains two steps, saves, evaluates 250 images and exits. `--load`
busy processes share the CPU with it, so that the input threads lag the main thread at
exit, as on a loaded machine. Prints one line per run and the counts by status; exits 1
if any run ended otherwise than 0.
"""

import argparse
import collections
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _busy():
  while True:
    pass


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument('--runs', type=int, default=20)
  parser.add_argument('--load', type=int, default=2, help='busy processes beside the runs')
  parser.add_argument('--checkout', default=_REPO, help='the checkout whose main.py runs')
  parser.add_argument('--data_dir', default='', help='TFDS data dir (the demo builds there)')
  parser.add_argument('--workdir', default='')
  args = parser.parse_args()
  workdir = args.workdir or tempfile.mkdtemp(prefix='resume_loop_')
  load = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(args.load)]
  for p in load:
    p.start()
  statuses = collections.Counter()
  try:
    for run in range(args.runs):
      steps = 2 * (run + 1)
      cmd = [sys.executable, 'main.py', '--config=configs/demo.py', f'--workdir={workdir}',
             f'--config.num_train_steps={steps}', '--config.checkpoint_every_steps=2',
             '--config.eval_every_steps=2', '--config.log_every_steps=1',
             "--config.eval_split=validation[:250]", f'--config.data_dir={args.data_dir}']
      start = time.time()
      proc = subprocess.run(cmd, cwd=args.checkout, capture_output=True, text=True,
                            check=False)
      tail = [line for line in proc.stderr.splitlines()
              if 'terminate called' in line or 'FATAL' in line or 'error:' in line
              or 'Fatal Python' in line]
      statuses[proc.returncode] += 1
      print(f'run {run + 1}: steps {steps}, exit {proc.returncode}, '
            f'{time.time() - start:.0f} s {" | ".join(tail[:3])}', flush=True)
  finally:
    for p in load:
      p.terminate()
  print('exit statuses:', dict(sorted(statuses.items())), flush=True)
  return 0 if set(statuses) == {0} else 1


if __name__ == '__main__':
  sys.exit(main())
