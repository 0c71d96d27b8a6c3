"""Tests for mvitv2_jax.data.random_resized_crop."""

import numpy as np
import tensorflow as tf

from mvitv2_jax.data import random_resized_crop


def _windows(shape, min_scale, n=100):
  for i in range(n):
    begin, size = random_resized_crop.sample_window(
        tf.constant(shape), tf.constant([3, i], tf.int64), min_scale=min_scale)
    yield begin.numpy(), size.numpy()


def test_windows_lie_inside_with_the_area_and_aspect_ranges():
  height, width = 120, 200
  areas, aspects = [], []
  for begin, size in _windows([height, width, 3], min_scale=0.08):
    assert begin[2] == 0 and size[2] == -1
    assert (begin[:2] >= 0).all() and begin[0] + size[0] <= height
    assert begin[1] + size[1] <= width
    areas.append(size[0] * size[1] / (height * width))
    aspects.append(size[1] / size[0])
  # Whole-pixel windows: the ranges hold up to a pixel's rounding.
  assert 0.07 < min(areas) < 0.2 and max(areas) <= 1
  lo, hi = random_resized_crop.ASPECT_RANGE
  assert 0.95 * lo < min(aspects) and max(aspects) < 1.05 * hi


def test_a_seed_gives_one_window():
  a = list(_windows([64, 48, 3], min_scale=0.5, n=5))
  b = list(_windows([64, 48, 3], min_scale=0.5, n=5))
  np.testing.assert_array_equal(np.array(a), np.array(b))
  assert len({w[0].tobytes() + w[1].tobytes() for w in a}) > 1
