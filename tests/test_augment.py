"""Tests for mvitv2_jax.augment."""

import numpy as np
import pytest
import tensorflow as tf

from mvitv2_jax import augment


def _image(h=24, w=20):
  rng = np.random.default_rng(0)
  return tf.constant(rng.integers(0, 256, size=(h, w, 3)), tf.uint8)


@pytest.mark.parametrize('op', augment.RAND_INCREASING_OPS, ids=lambda op: op.__name__)
@pytest.mark.parametrize('level', [-9.0, 9.0])
def test_every_op_keeps_shape_and_dtype(op, level):
  image = _image()
  out = op(image, tf.constant(level))
  assert out.dtype == tf.uint8 and out.shape == image.shape


def test_ops_change_the_image():
  image = _image()
  for op in augment.RAND_INCREASING_OPS:
    if op is augment.auto_contrast:  # A random image already spans 0..255.
      continue
    assert not np.array_equal(op(image, tf.constant(9.0)), image), op.__name__


def test_geometric_ops_fill_with_mean_colour():
  image = tf.fill([16, 16, 3], tf.constant(7, tf.uint8))
  out = augment.translate_x_rel(image, tf.constant(10.0)).numpy()
  np.testing.assert_array_equal(out[:, -1], np.broadcast_to(augment.FILL_COLOR, (16, 3)))
  np.testing.assert_array_equal(out[:, 0], 7)


def test_rand_augment_is_seeded():
  image = _image()
  run = lambda seed: augment.rand_augment(
      image, tf.constant(seed, tf.int64), num_ops=6, magnitude=9.0, magnitude_std=0.5)
  a, b, c = run([1, 2]), run([1, 2]), run([3, 4])
  assert a.dtype == tf.uint8 and a.shape == image.shape
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_random_erase_changes_one_rectangle():
  image = tf.zeros([32, 24, 3])
  erased = 0
  for seed in range(20):
    out = augment.random_erase(image, tf.constant([seed, 0], tf.int64), prob=0.5).numpy()
    changed = (out != 0).any(-1)
    if not changed.any():
      continue
    erased += 1
    rows, cols = np.nonzero(changed.any(1))[0], np.nonzero(changed.any(0))[0]
    box = changed[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    assert box.all()  # The changed pixels form exactly one filled rectangle.
    area = box.size / changed.size
    assert 0.015 < area < 0.4
  assert 0 < erased < 20
