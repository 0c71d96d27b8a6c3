"""Shared test setup and fixtures.

The pytest process has 8 simulated CPU devices, so multi-device checks run in-process
on a 1-device and an 8-device mesh. Every other test runs on one device, as a user's
laptop would: the trainer is given `devices=jax.devices()[:1]` (`tests/helpers/
in_process.py`). Subprocesses keep jax's default single CPU device unless a test asks
for more. Helpers are imported as `from tests.helpers import ...`.
"""

import os

# Many tests compile the same tiny programs, in-process and in subprocesses.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', '/tmp/mvitv2_jax_test_jit_cache')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from tests.helpers import fast_compile  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.helpers import training  # pylint: disable=g-import-not-at-top,wrong-import-position

# Before any backend starts; unlike XLA_FLAGS it does not reach subprocesses.
jax.config.update('jax_num_cpu_devices', training.SIMULATED_CPU_DEVICES)


def pytest_configure(config):
  # After the command line is read, before any test starts JAX's backend.
  fast_compile.apply(config.getoption('markexpr') or '')


@pytest.fixture(scope='session')
def tiny_golden():
  """(params, images) of the golden tiny model: the recipe weights, converted."""
  from mvitv2_jax import convert, models  # pylint: disable=g-import-not-at-top
  from tests.helpers import golden  # pylint: disable=g-import-not-at-top
  model = models.create_model('mvitv2_t', **golden.TINY)
  params = convert.convert_state_dict(golden.recipe_state_dict('tiny'), model)
  return params, np.asarray(golden.load('tiny')['input_nhwc'])


@pytest.fixture(scope='session')
def demo_shapes_dir(tmp_path_factory):
  """A data_dir holding the prepared `mvitv2_demo_shapes` (10,000 + 1,000 images)."""
  return training.prepared_tfds('mvitv2_demo_shapes', tmp_path_factory)


@pytest.fixture(scope='session')
def demo_motion_tiny_dir(tmp_path_factory):
  """A data_dir holding the prepared `mvitv2_demo_motion/tiny` (40 + 21 videos)."""
  return training.prepared_tfds(training.DEMO_MOTION_TINY, tmp_path_factory)

