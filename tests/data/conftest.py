"""Fixtures of the data tests: the image demo dataset, built once for every module."""

import pytest

from mvitv2_jax.data import demo_dataset
from tests.helpers import training


@pytest.fixture(scope='session')
def demo_shapes_dir(tmp_path_factory):
  """A data_dir holding the prepared `mvitv2_demo_shapes` (10,000 + 1,000 images)."""
  return training.prepared_tfds(demo_dataset.MViTv2DemoShapes.name, tmp_path_factory)
