"""Shared test setup and fixtures.

The pytest process keeps jax's default single CPU device; multi-device checks run in
subprocesses (`tests/helpers/multidevice_check.py`). Helpers are imported as
`from tests.helpers import ...`.
"""

import os

import numpy as np
import pytest

# Many tests compile the same tiny programs, in-process and in subprocesses.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', '/tmp/mvitv2_jax_test_jit_cache')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')


@pytest.fixture(scope='session')
def tiny_golden():
  """(params, images) of the golden tiny model: the recipe weights, converted."""
  from mvitv2_jax import convert, models  # pylint: disable=g-import-not-at-top
  from tests.helpers import golden  # pylint: disable=g-import-not-at-top
  model = models.create_model('mvitv2_t', **golden.TINY)
  params = convert.convert_state_dict(golden.recipe_state_dict('tiny'), model)
  return params, np.asarray(golden.load('tiny')['input_nhwc'])
