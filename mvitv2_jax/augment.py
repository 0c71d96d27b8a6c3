"""Per-example train augmentations for tf.data: RandAugment and random erasing.

Both follow timm (`rand-m9-n6-mstd0.5-inc1` and `RandomErasing(mode='pixel')`),
and draw all their randomness from stateless ops keyed by an explicit seed, so an
example's augmentation depends only on its seed, never on tf.data parallelism.

NOTE: timm's geometric ops resample bicubically (PIL); TensorFlow's affine
transform op offers only nearest and bilinear, so bilinear is used here.
"""

import math

import tensorflow as tf

# timm's RandAugment fill colour: the ImageNet mean in uint8.
FILL_COLOR = (124, 116, 104)
_MAX_LEVEL = 10.0
_TRANSLATE_PCT = 0.45
_ROTATE_DEGREES = 30.0
_SHEAR = 0.3


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `ImageEnhance`: degenerate + factor * (image - degenerate), as uint8."""
  degenerate = tf.cast(degenerate, tf.float32)
  out = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def _grayscale(image: tf.Tensor) -> tf.Tensor:
  """PIL 'L' conversion (ITU-R 601-2 luma), float32 [H, W, 1]."""
  weights = tf.constant([0.299, 0.587, 0.114], tf.float32)
  return tf.reduce_sum(tf.cast(image, tf.float32) * weights, -1, keepdims=True)


def _affine(image: tf.Tensor, transform: tf.Tensor) -> tf.Tensor:
  """Applies an output->input affine map, filling outside with FILL_COLOR.

  Args:
    image: uint8 [H, W, 3].
    transform: float32 [6] (a0, a1, a2, b0, b1, b2): the output pixel (x, y)
      samples the input at (a0 x + a1 y + a2, b0 x + b1 y + b2), as in PIL.

  Returns:
    uint8 [H, W, 3].
  """
  fill = tf.constant(FILL_COLOR, tf.float32)
  # The op fills with one scalar; shifting by the fill colour turns its zero
  # fill into the per-channel colour, with bilinear edges blending into it.
  shifted = tf.cast(image, tf.float32) - fill
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=shifted[None],
      transforms=tf.concat([transform, tf.zeros([2])], 0)[None],
      output_shape=tf.shape(image)[:2],
      fill_value=0.0,
      interpolation='BILINEAR',
      fill_mode='CONSTANT')[0]
  return tf.cast(tf.clip_by_value(tf.round(out + fill), 0.0, 255.0), tf.uint8)


def auto_contrast(image, level):
  del level
  image_f = tf.cast(image, tf.float32)
  lo = tf.reduce_min(image_f, axis=[0, 1])
  hi = tf.reduce_max(image_f, axis=[0, 1])
  scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
  offset = tf.where(hi > lo, -lo * scale, 0.0)
  return tf.cast(tf.clip_by_value(tf.floor(image_f * scale + offset), 0, 255), tf.uint8)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.equalize` on one uint8 channel [H, W]."""
  hist = tf.math.bincount(tf.cast(channel, tf.int32), minlength=256, maxlength=256)
  last_nonzero = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
  step = (tf.reduce_sum(hist) - last_nonzero) // 255
  cum_before = tf.cumsum(hist, exclusive=True)
  lut = tf.minimum((step // 2 + cum_before) // tf.maximum(step, 1), 255)
  equalized = tf.gather(lut, tf.cast(channel, tf.int32))
  return tf.where(step > 0, tf.cast(equalized, tf.uint8), channel)


def equalize(image, level):
  del level
  return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], -1)


def invert(image, level):
  del level
  return 255 - image


def rotate(image, level):
  degrees = level / _MAX_LEVEL * _ROTATE_DEGREES
  theta = degrees * math.pi / 180.0
  h = tf.cast(tf.shape(image)[0], tf.float32)
  w = tf.cast(tf.shape(image)[1], tf.float32)
  cy, cx = (h - 1) / 2, (w - 1) / 2
  cos, sin = tf.cos(theta), tf.sin(theta)
  # Inverse map of a counter-clockwise rotation about the centre (PIL rotate).
  return _affine(image, tf.stack([
      cos, -sin, cx - cos * cx + sin * cy,
      sin, cos, cy - sin * cx - cos * cy]))


def posterize_increasing(image, level):
  # timm: 4 - int(level / 10 * 4) bits kept, fewer bits at higher levels.
  bits = 4 - tf.cast(level / _MAX_LEVEL * 4, tf.int32)
  shift = tf.cast(8 - bits, tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize_increasing(image, level):
  threshold = 256 - tf.cast(level / _MAX_LEVEL * 256, tf.int32)
  image_i = tf.cast(image, tf.int32)
  return tf.cast(tf.where(image_i >= threshold, 255 - image_i, image_i), tf.uint8)


def solarize_add(image, level):
  add = tf.cast(level / _MAX_LEVEL * 110, tf.int32)
  image_i = tf.cast(image, tf.int32)
  return tf.cast(tf.where(image_i < 128, tf.minimum(image_i + add, 255), image_i), tf.uint8)


def _enhance_factor(level):
  # timm `_enhance_increasing_level`; the sign is already in `level`.
  return 1.0 + level / _MAX_LEVEL * 0.9


def color_increasing(image, level):
  return _blend(_grayscale(image), image, _enhance_factor(level))


def contrast_increasing(image, level):
  mean = tf.floor(tf.reduce_mean(_grayscale(image)) + 0.5)
  return _blend(tf.fill(tf.shape(image), mean), image, _enhance_factor(level))


def brightness_increasing(image, level):
  return _blend(tf.zeros_like(image), image, _enhance_factor(level))


def sharpness_increasing(image, level):
  # PIL's SMOOTH filter; PIL leaves the one-pixel border unfiltered.
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(
      tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], 'VALID')[0]
  smooth = tf.cast(tf.clip_by_value(tf.round(smooth), 0, 255), tf.uint8)
  degenerate = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  interior = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(interior, degenerate, image)
  return _blend(degenerate, image, _enhance_factor(level))


def shear_x(image, level):
  shear = level / _MAX_LEVEL * _SHEAR
  return _affine(image, tf.stack([1.0, shear, 0.0, 0.0, 1.0, 0.0]))


def shear_y(image, level):
  shear = level / _MAX_LEVEL * _SHEAR
  return _affine(image, tf.stack([1.0, 0.0, 0.0, shear, 1.0, 0.0]))


def translate_x_rel(image, level):
  pixels = level / _MAX_LEVEL * _TRANSLATE_PCT * tf.cast(tf.shape(image)[1], tf.float32)
  return _affine(image, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0]))


def translate_y_rel(image, level):
  pixels = level / _MAX_LEVEL * _TRANSLATE_PCT * tf.cast(tf.shape(image)[0], tf.float32)
  return _affine(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels]))


# timm `_RAND_INCREASING_TRANSFORMS`, in its order. Each op maps (uint8 [H, W, 3],
# signed float level in [-10, 10]) to uint8 [H, W, 3]; unsigned ops ignore the sign.
RAND_INCREASING_OPS = (
    auto_contrast, equalize, invert, rotate, posterize_increasing,
    solarize_increasing, solarize_add, color_increasing, contrast_increasing,
    brightness_increasing, sharpness_increasing, shear_x, shear_y,
    translate_x_rel, translate_y_rel,
)
_UNSIGNED_OPS = (posterize_increasing, solarize_increasing, solarize_add)


def rand_augment(image: tf.Tensor, seed: tf.Tensor, *, num_ops: int,
                 magnitude: float, magnitude_std: float, prob: float = 0.5) -> tf.Tensor:
  """timm RandAugment with the 15 "increasing" ops.

  `num_ops` ops are drawn uniformly with replacement; each is applied with
  probability `prob` at a magnitude drawn from N(magnitude, magnitude_std)
  clipped to [0, 10], negated with probability 0.5 for signed ops.

  Args:
    image: uint8 [H, W, 3].
    seed: int32/int64 [2], stateless seed.
    num_ops: number of ops per image (n in rand-m9-n6).
    magnitude: mean magnitude in [0, 10] (m).
    magnitude_std: std of the magnitude noise (mstd).
    prob: probability of applying each drawn op.

  Returns:
    uint8 [H, W, 3].
  """
  op_seeds = tf.random.experimental.stateless_split(seed, num_ops)
  image = tf.ensure_shape(image, [None, None, 3])
  static_shape = image.shape

  # A loop rather than `num_ops` unrolled copies keeps the graph (and so the
  # tracing and optimisation time of every tf.data map) small.
  def apply_op(i, image):
    draw_seeds = tf.random.experimental.stateless_split(op_seeds[i], 4)
    op_index = tf.random.stateless_uniform(
        [], draw_seeds[0], 0, len(RAND_INCREASING_OPS), tf.int32)
    apply = tf.random.stateless_uniform([], draw_seeds[1]) < prob
    level = magnitude + magnitude_std * tf.random.stateless_normal([], draw_seeds[2])
    level = tf.clip_by_value(level, 0.0, _MAX_LEVEL)
    negate = tf.random.stateless_uniform([], draw_seeds[3]) < 0.5
    signed_level = tf.where(negate, -level, level)

    def branch(op):
      op_level = level if op in _UNSIGNED_OPS else signed_level
      return lambda: op(image, op_level)

    # The switch sits inside the cond so that skipped ops cost nothing.
    image = tf.cond(
        apply,
        lambda: tf.switch_case(op_index, [branch(op) for op in RAND_INCREASING_OPS]),
        lambda: image)
    return i + 1, tf.ensure_shape(image, static_shape)

  _, image = tf.while_loop(lambda i, _: i < num_ops, apply_op, (0, image))
  return image


def random_erase(image: tf.Tensor, seed: tf.Tensor, *, prob: float,
                 min_area: float = 0.02, max_area: float = 1 / 3,
                 min_aspect: float = 0.3, max_attempts: int = 10) -> tf.Tensor:
  """timm `RandomErasing(mode='pixel', max_count=1)` on a normalised image.

  With probability `prob`, up to `max_attempts` boxes of area fraction
  U(min_area, max_area) and log-uniform aspect in [min_aspect, 1/min_aspect] are
  drawn; the first that fits is filled with per-pixel, per-channel N(0, 1).

  Args:
    image: float32 [H, W, C], already normalised.
    seed: int32/int64 [2], stateless seed.
    prob: probability of erasing.
    min_area: smallest box area as a fraction of the image.
    max_area: largest box area as a fraction of the image.
    min_aspect: smallest aspect ratio h/w (the largest is its inverse).
    max_attempts: boxes tried before giving up (timm: 10).

  Returns:
    float32 [H, W, C].
  """
  seeds = tf.random.experimental.stateless_split(seed, 6)
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  area = tf.cast(h * w, tf.float32)
  target_area = area * tf.random.stateless_uniform([max_attempts], seeds[0], min_area, max_area)
  log_aspect = tf.random.stateless_uniform(
      [max_attempts], seeds[1], math.log(min_aspect), -math.log(min_aspect))
  aspect = tf.exp(log_aspect)
  box_h = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
  box_w = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
  fits = (box_h < h) & (box_w < w)
  # First fitting attempt, as timm's loop breaks on it; `any_fits` is false if none.
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  any_fits = tf.reduce_any(fits)
  box_h, box_w = box_h[first], box_w[first]
  # Inclusive upper bounds like Python's random.randint.
  top = tf.random.stateless_uniform([], seeds[2], 0, tf.maximum(h - box_h + 1, 1), tf.int32)
  left = tf.random.stateless_uniform([], seeds[3], 0, tf.maximum(w - box_w + 1, 1), tf.int32)
  erase = (tf.random.stateless_uniform([], seeds[4]) < prob) & any_fits

  # Noise for the box only, drawn only when erasing (as timm does): a full-size
  # draw and select cost ~3 ms per 224x224 image whether or not it erased.
  def paste_noise():
    noise = tf.random.stateless_normal([box_h, box_w, shape[2]], seeds[5])
    band = image[top:top + box_h]
    band = tf.concat([band[:, :left], noise, band[:, left + box_w:]], 1)
    return tf.concat([image[:top], band, image[top + box_h:]], 0)

  return tf.cond(erase, paste_noise, lambda: image)
