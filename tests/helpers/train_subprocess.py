"""Runs `train_and_evaluate` on the tiny config and synthetic data (tests only).

Usage: python -m tests.helpers.train_subprocess WORKDIR JSON_OVERRIDES [HOLD_AFTER_STEP]

With HOLD_AFTER_STEP the run prints 'HOLDING <step>' once the checkpoint of that step
is on disk, then waits forever: the test kills it there, at a known point.
"""

import json
import logging
import sys
import time

from mvitv2_jax import train
from mvitv2_jax.train import checkpointing
from tests.helpers import synthetic_data
from tests.helpers import training


def _hold_after(step: int):
  save = checkpointing.Checkpointer.save

  def save_then_hold(self, saved_step, state):
    save(self, saved_step, state)
    if saved_step == step:
      print(f'HOLDING {step}', flush=True)
      while True:
        time.sleep(60)

  checkpointing.Checkpointer.save = save_then_hold


def main():
  workdir, overrides = sys.argv[1], json.loads(sys.argv[2])
  if len(sys.argv) > 3:
    _hold_after(int(sys.argv[3]))
  logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s', force=True)
  train.train_and_evaluate(training.tiny_config(**overrides), workdir, data=synthetic_data)
  print('DONE', flush=True)


if __name__ == '__main__':
  main()
