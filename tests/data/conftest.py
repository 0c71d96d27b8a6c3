"""Fixtures of the data tests: the image demo dataset, built once for every module."""

import pytest

from tests.helpers import training


@pytest.fixture(scope='session')
def demo_shapes_dir(tmp_path_factory):
  """A data_dir holding the prepared `mvitv2_demo_shapes` (10,000 + 1,000 images)."""
  return training.prepared_tfds('mvitv2_demo_shapes', tmp_path_factory)
