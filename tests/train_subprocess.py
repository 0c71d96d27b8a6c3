"""Runs `train_and_evaluate` on the tiny config and synthetic data (tests only).

Usage: python train_subprocess.py WORKDIR JSON_OVERRIDES (dotted keys).
"""

import json
import sys

from absl import logging

import synthetic_data
import train_helpers
from mvitv2_jax import train


def main():
  workdir, overrides = sys.argv[1], json.loads(sys.argv[2])
  logging.set_verbosity(logging.INFO)
  train.input_pipeline = synthetic_data
  train.train_and_evaluate(train_helpers.tiny_config(**overrides), workdir)
  print('DONE', flush=True)


if __name__ == '__main__':
  main()
