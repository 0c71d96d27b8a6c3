"""One train step on 8 simulated CPU devices vs one device (tests only).

Run as a subprocess (XLA_FLAGS must be set before jax is imported). Prints one
JSON line: for each variant, the max abs difference of loss and params from
the single-device step on the same global batch.
"""

import os

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'

import json  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax
import numpy as np

from mvitv2_jax.train import programs as programs_lib
from mvitv2_jax.train import sharding
from tests.helpers import synthetic_data
from tests.helpers import training


def one_step(config, mesh):
  """Params and loss after one step of `config` on `mesh`."""
  with jax.set_mesh(mesh):
    programs = programs_lib.build(config, mesh, synthetic_data)
    sharded = sum(not s.is_fully_replicated for s in jax.tree.leaves(programs.shardings))
    batch = next(synthetic_data.create_train_iterator(config))
    state, metrics = programs.train_step(programs.initial_state(),
                                         sharding.host_to_global(batch, mesh))
    return jax.device_get((state.params, metrics['loss'])), sharded


def max_diff(a, b):
  return float(max(np.max(np.abs(x - y)) for x, y in
                   zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def main():
  assert jax.device_count() == 8, jax.devices()
  auto = (jax.sharding.AxisType.Auto,)
  one = jax.make_mesh((1,), ('data',), axis_types=auto,
                      devices=jax.devices()[:1])
  eight = sharding.create_mesh()
  # The tiny model's params are all below the FSDP size threshold.
  sharding._MIN_SHARDED_SIZE = 0  # pylint: disable=protected-access
  # No drop path in the accumulation check: micro-batches draw their own masks.
  results = {}
  for drop_path in (0.1, 0.0):
    base = dict(drop_path_rate=drop_path)
    (ref_params, ref_loss), _ = one_step(training.tiny_config(**base), one)
    variants = {'replicated': {}, 'shard_params': {'shard_params': True}}
    if drop_path == 0.0:
      variants = {'grad_accum': {'optim.grad_accum_steps': 2}}
    for name, extra in variants.items():
      (params, loss), sharded = one_step(
          training.tiny_config(**base, **extra), eight)
      results[name] = {'loss': abs(float(loss - ref_loss)),
                       'params': max_diff(params, ref_params),
                       'sharded_leaves': sharded}
  print(json.dumps(results))


if __name__ == '__main__':
  main()
