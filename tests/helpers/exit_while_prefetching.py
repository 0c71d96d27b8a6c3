"""Closes a prefetch whose source is busy in JAX, then exits at once (tests only).

Usage: python -m tests.helpers.exit_while_prefetching

The source spends its time inside JAX calls, as the train stream's thread does with
a loaded CPU; the process must exit 0, never abort.
"""

import jax
import numpy as np

from mvitv2_jax.train import sharding


def _busy_source():
  big = np.ones((1024, 1024), np.float32)
  while True:
    for _ in range(200):
      jax.device_put(big).block_until_ready()
    yield {'x': np.zeros((2,), np.float32)}


def main():
  batches = sharding.prefetch(_busy_source(), sharding.create_mesh())
  next(batches)
  batches.close()
  print('closed', flush=True)


if __name__ == '__main__':
  main()
