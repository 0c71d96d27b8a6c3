"""Tests for mvitv2_jax.augment."""

import numpy as np
from PIL import Image
from PIL import ImageOps
import pytest
import tensorflow as tf

from mvitv2_jax.data import augment


def _image(h=24, w=20):
  rng = np.random.default_rng(0)
  return tf.constant(rng.integers(0, 256, size=(h, w, 3)), tf.uint8)


def _smooth_image(h=31, w=26):
  """Noise upsampled bilinearly: gradients as well as edges, all 256 levels."""
  rng = np.random.default_rng(1)
  small = rng.integers(0, 256, size=(5, 4, 3)).astype(np.uint8)
  return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def _to_uint8(x):
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _affine_reference(image, transform):
  """NumPy float32 bilinear resampling, computed as ImageProjectiveTransformV3 does.

  The output pixel (x, y) samples (a0 x + a1 y + a2, b0 x + b1 y + b2); pixels
  outside the image read as FILL_COLOR.
  """
  h, w, _ = image.shape
  a0, a1, a2, b0, b1, b2 = np.asarray(transform, np.float32)
  y, x = np.mgrid[:h, :w].astype(np.float32)
  in_x, in_y = (a0 * x + a1 * y) + a2, (b0 * x + b1 * y) + b2
  x0, y0 = np.floor(in_x), np.floor(in_y)
  fill = np.asarray(augment.FILL_COLOR, np.float32)
  shifted = image.astype(np.float32) - fill

  def tap(ty, tx):
    inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
    values = shifted[np.clip(ty, 0, h - 1).astype(int), np.clip(tx, 0, w - 1).astype(int)]
    return np.where(inside[..., None], values, np.float32(0))

  wx0, wx1 = ((x0 + 1) - in_x)[..., None], (in_x - x0)[..., None]
  top = wx0 * tap(y0, x0) + wx1 * tap(y0, x0 + 1)
  bottom = wx0 * tap(y0 + 1, x0) + wx1 * tap(y0 + 1, x0 + 1)
  out = ((y0 + 1) - in_y)[..., None] * top + (in_y - y0)[..., None] * bottom
  return _to_uint8(out + fill)


def _blend_reference(degenerate, image, factor):
  image = image.astype(np.float32)
  return _to_uint8(degenerate + np.float32(factor) * (image - degenerate))


def _gray_reference(image):
  image = image.astype(np.float32)
  return (image[..., :1] * np.float32(0.299) + image[..., 1:2] * np.float32(0.587)
          + image[..., 2:] * np.float32(0.114))


def _sharpness_reference(image, factor):
  image_f = image.astype(np.float32)
  h, w, _ = image.shape
  window = sum(image_f[dy:h - 2 + dy, dx:w - 2 + dx] for dy in range(3) for dx in range(3))
  smooth = np.round((window + 4 * image_f[1:-1, 1:-1]) / 13)
  degenerate = image_f.copy()
  degenerate[1:-1, 1:-1] = smooth
  return _blend_reference(degenerate, image, factor)


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


def _level_args(level):
  """(translate fraction, shear, enhance factor) in float32, as the ops compute them."""
  level = np.float32(level) / np.float32(10)
  return (level * np.float32(0.45), level * np.float32(0.3),
          np.float32(1) + level * np.float32(0.9))


@pytest.mark.parametrize('level', [-9.4, 3.0, 10.0])
def test_geometric_ops_match_bilinear_reference(level):
  image = _smooth_image()
  h, w, _ = image.shape
  translate, shear, _ = _level_args(level)
  theta = np.deg2rad(level * 3)
  cos, sin = np.cos(theta), np.sin(theta)
  cx, cy = (w - 1) / 2, (h - 1) / 2
  cases = [  # (op, transform, fraction of pixels that must match exactly)
      (augment.translate_x_rel, (1, 0, translate * np.float32(w), 0, 1, 0), 1.0),
      (augment.translate_y_rel, (1, 0, 0, 0, 1, translate * np.float32(h)), 1.0),
      # Shears resample with CropAndResize and rotate with the float32 cos and
      # sin of TensorFlow: the same bilinear map up to float rounding.
      (augment.shear_x, (1, shear, 0, 0, 1, 0), 0.97),
      (augment.shear_y, (1, 0, 0, shear, 1, 0), 0.97),
      (augment.rotate, (cos, -sin, cx - cos * cx + sin * cy,
                        sin, cos, cy - sin * cx - cos * cy), 0.97),
  ]
  for op, transform, exact in cases:
    out = op(tf.constant(image), tf.constant(level)).numpy().astype(int)
    diff = np.abs(out - _affine_reference(image, transform).astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() >= exact, op.__name__


@pytest.mark.parametrize('level', [-9.4, 3.0, 10.0])
def test_enhance_ops_match_blend_reference(level):
  image = _smooth_image()
  factor = _level_args(level)[2]
  gray = _gray_reference(image)
  mean = np.floor(gray.astype(np.float64).mean() + 0.5)
  cases = [
      (augment.brightness_increasing, _blend_reference(np.float32(0), image, factor)),
      (augment.color_increasing, _blend_reference(gray, image, factor)),
      (augment.contrast_increasing, _blend_reference(np.float32(mean), image, factor)),
      (augment.sharpness_increasing, _sharpness_reference(image, factor)),
  ]
  for op, expected in cases:
    np.testing.assert_array_equal(op(tf.constant(image), tf.constant(level)), expected,
                                  err_msg=op.__name__)


@pytest.mark.parametrize('level', [0.0, 4.0, 9.1, 10.0])
def test_pointwise_ops_match_pil(level):
  image = _smooth_image()
  pil = Image.fromarray(image)
  add = int(level / 10 * 110)
  cases = [
      (augment.invert, ImageOps.invert(pil)),
      (augment.equalize, ImageOps.equalize(pil)),
      (augment.solarize_increasing, ImageOps.solarize(pil, 256 - int(level / 10 * 256))),
      (augment.solarize_add, pil.point([min(255, v + add) if v < 128 else v
                                        for v in range(256)] * 3)),
  ]
  bits = 4 - int(level / 10 * 4)
  if bits >= 1:  # PIL refuses 0 bits.
    cases.append((augment.posterize_increasing, ImageOps.posterize(pil, bits)))
  for op, expected in cases:
    np.testing.assert_array_equal(op(tf.constant(image), tf.constant(level)),
                                  np.asarray(expected), err_msg=op.__name__)
  # Autocontrast as PIL, up to PIL's float64 against our float32 scale.
  low_contrast = (image // 3 + 60).astype(np.uint8)
  out = augment.auto_contrast(tf.constant(low_contrast), tf.constant(level)).numpy()
  expected = np.asarray(ImageOps.autocontrast(Image.fromarray(low_contrast)))
  assert np.abs(out.astype(int) - expected).max() <= 1


def test_rand_augment_applies_nothing_at_prob_zero():
  image = _image()
  out = augment.rand_augment(image, tf.constant([5, 6], tf.int64), num_ops=6,
                             magnitude=9.0, magnitude_std=0.5, prob=0.0)
  np.testing.assert_array_equal(out, image)


def test_random_erase_is_seeded_gaussian_noise():
  image = tf.zeros([64, 64, 3])
  seed = tf.constant([3, 0], tf.int64)
  out = augment.random_erase(image, seed, prob=1.0).numpy()
  np.testing.assert_array_equal(out, augment.random_erase(image, seed, prob=1.0))
  noise = out[out != 0]
  assert noise.size > 0.02 * out.size
  assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1
