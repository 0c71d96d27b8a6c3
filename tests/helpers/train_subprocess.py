"""Runs `train_and_evaluate` on the tiny config and synthetic data (tests only).

Usage: python -m tests.helpers.train_subprocess WORKDIR JSON_OVERRIDES [HOLD_AFTER_STEP]
           [--release FILE] [--record DIR]
           [--devices N] [--coordinator HOST:PORT --num_processes N --process_id I]

With --devices the process has the pytest process's simulated CPU devices and the run
uses the first N (it then rounds as an in-process run does); otherwise it uses every
device of every process.

With HOLD_AFTER_STEP the run prints 'HOLDING <step>' once the checkpoint of that step
is on disk, then waits until FILE exists (forever without --release): the test kills
or signals it there, at a known point. With --record, process 0 writes the scalars
(`scalars.json`, also when the run stops early) and the final params (`params.npz`)
to DIR instead of TensorBoard files. The exit status is main.py's: 0, 1 or 2 with an 'error:' line, 128 + signal
after a stop on SIGINT or SIGTERM.
"""

import argparse
import json
import logging
import os
import sys
import time

import jax
import numpy as np

from mvitv2_jax import train
from mvitv2_jax.train import checkpointing
from mvitv2_jax.train import errors
from mvitv2_jax.train import metrics
from tests.helpers import in_process
from tests.helpers import synthetic_data
from tests.helpers import training


def _hold_after(step: int, release: str | None):
  save = checkpointing.Checkpointer.save

  def save_then_hold(self, saved_step, state):
    save(self, saved_step, state)
    if saved_step == step:
      print(f'HOLDING {step}', flush=True)
      while not (release and os.path.exists(release)):
        time.sleep(0.05)

  checkpointing.Checkpointer.save = save_then_hold


class _RecordingWriter:
  """Keeps every scalar; process 0 writes them to `<record>/scalars.json` on close."""

  def __init__(self, record: str | None):
    self._record = record
    self.scalars_by_step = {}

  def scalars(self, step, values):
    self.scalars_by_step.setdefault(int(step), {}).update(
        {k: float(v) for k, v in values.items()})

  def close(self):
    if self._record and jax.process_index() == 0:
      with open(os.path.join(self._record, 'scalars.json'), 'w') as f:
        json.dump(self.scalars_by_step, f)


def _save_params(record: str, params):
  np.savez(os.path.join(record, 'params.npz'), **in_process.flat_params(params))


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument('workdir')
  parser.add_argument('overrides', type=json.loads)
  parser.add_argument('hold_after', type=int, nargs='?')
  parser.add_argument('--release')
  parser.add_argument('--record')
  parser.add_argument('--devices', type=int)
  parser.add_argument('--coordinator')
  parser.add_argument('--num_processes', type=int)
  parser.add_argument('--process_id', type=int)
  parser.add_argument('--heartbeat_timeout', type=int, default=100)
  args = parser.parse_args()
  devices = None
  if args.devices:
    jax.config.update('jax_num_cpu_devices', training.SIMULATED_CPU_DEVICES)
    devices = jax.devices()[:args.devices]
  if args.coordinator:
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                               heartbeat_timeout_seconds=args.heartbeat_timeout)
  if args.hold_after is not None:
    _hold_after(args.hold_after, args.release)
  if args.record:
    os.makedirs(args.record, exist_ok=True)
  logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s', force=True)
  try:
    writer = (lambda _: _RecordingWriter(args.record)) if args.record else metrics.SummaryWriter
    state = train.train_and_evaluate(
        training.tiny_config(**args.overrides), args.workdir, data=synthetic_data,
        writer=writer, devices=devices)
  except errors.Interrupted as e:
    print(f'INTERRUPTED {e.step}: {e}', flush=True)
    return e.exit_status
  except errors.RunError as e:
    print(f'error: {e}', flush=True)
    return e.exit_status
  if args.record and jax.process_index() == 0:
    _save_params(args.record, state.params)
  print('DONE', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
