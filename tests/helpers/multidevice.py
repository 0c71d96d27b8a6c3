"""Steps of a config on a 1-device and an 8-device mesh of this process (tests only).

The pytest process has 8 simulated CPU devices (tests/conftest.py), so the same global
batch can run on both meshes side by side.
"""

import jax
import numpy as np

from mvitv2_jax.train import programs as programs_lib
from mvitv2_jax.train import sharding
from tests.helpers import synthetic_data


def one_device_mesh() -> jax.sharding.Mesh:
  """The mesh of a single-device run: the first simulated device."""
  return sharding.create_mesh(jax.devices()[:1])


def eight_device_mesh() -> jax.sharding.Mesh:
  """The mesh over all 8 simulated devices."""
  assert jax.device_count() == 8, jax.devices()
  return sharding.create_mesh(jax.devices())


def one_step(config, mesh):
  """((variables, loss) after one train step of `config` on `mesh`, sharded state leaves).

  The variables are `{'params': ...}` and the model's collections (BatchNorm's statistics).
  """
  with jax.set_mesh(mesh):
    programs = programs_lib.build(config, mesh, synthetic_data)
    sharded = sum(not s.is_fully_replicated for s in jax.tree.leaves(programs.shardings))
    batch = next(synthetic_data.create_train_iterator(config))
    state, metrics = programs.train_step(programs.initial_state(),
                                         sharding.host_to_global(batch, mesh))
    return jax.device_get((state.variables(), metrics['loss'])), sharded


def eval_sums(config, mesh, variables):
  """The eval step's sums on the first synthetic eval batch, on `mesh` (`variables` as
  `one_step` gives them)."""
  with jax.set_mesh(mesh):
    programs = programs_lib.build(config, mesh, synthetic_data)
    batch = next(synthetic_data.create_eval_iterator(config))
    variables = jax.device_put(variables, programs.shardings.variables())
    return jax.device_get(programs.eval_step(variables, sharding.host_to_global(batch, mesh)))


def max_diff(a, b) -> float:
  """The largest absolute difference between two pytrees of arrays."""
  return float(max(np.max(np.abs(x - y)) for x, y in
                   zip(jax.tree.leaves(a), jax.tree.leaves(b))))
