"""Per-example train augmentations for tf.data: RandAugment and random erasing.

Both follow timm (`rand-m9-n6-mstd0.5-inc1` and `RandomErasing(mode='pixel')`),
and draw all their randomness from stateless ops keyed by an explicit seed, so an
example's augmentation depends only on its seed, never on tf.data parallelism.

NOTE: timm's geometric ops resample bicubically (PIL); TensorFlow's affine
transform op offers only nearest and bilinear, so bilinear is used here.
"""

import math

import numpy as np
import tensorflow as tf

from mvitv2_jax.data import imagenet

# timm's RandAugment fill colour: the ImageNet mean in uint8, (124, 116, 104).
FILL_COLOR = tuple(round(255 * m) for m in imagenet.MEAN_RGB)
_MAX_LEVEL = 10.0
_TRANSLATE_PCT = 0.45
_ROTATE_DEGREES = 30.0
_SHEAR = 0.3

# How the ops are written, for speed on one CPU thread as tf.data runs them
# (figures in docs/performance.md): per-channel constants tiled along [H, W * 3] rows
# (`_rows`) rather than broadcast as [3] vectors; arithmetic rather than tf.where;
# slices or CropAndResize rather than ImageProjectiveTransformV3 for axis-aligned
# resampling; static shapes (shape arithmetic in Python) and few graph nodes, since
# every node run has a fixed cost.


def _dims(image: tf.Tensor) -> list:
  """[H, W, C] as Python ints where static (no graph nodes), else tensors."""
  static = image.shape.as_list()
  if None not in static:
    return static
  dynamic = tf.shape(image)
  return [d if d is not None else dynamic[i] for i, d in enumerate(static)]


def _rows(image: tf.Tensor) -> tf.Tensor:
  """[H, W, C] -> [H, W * C]."""
  h, w, c = _dims(image)
  return tf.reshape(image, [h, w * c])


def _tiled(values, width, dtype=tf.float32) -> tf.Tensor:
  """Per-channel `values` tiled `width` times, to broadcast along `_rows`."""
  if isinstance(width, int) and not tf.is_tensor(values):
    return tf.constant(np.tile(values, width), dtype)
  return tf.tile(tf.cast(values, dtype), [width])


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `ImageEnhance`: degenerate + factor * (image - degenerate), as uint8.

  Args:
    degenerate: float32, broadcastable to `image`.
    image: float32 [H, W, 3] with uint8 values.
    factor: float32 scalar.

  Returns:
    uint8 [H, W, 3].
  """
  return imagenet.round_uint8(degenerate + factor * (image - degenerate))


def _grayscale(image: tf.Tensor) -> tf.Tensor:
  """PIL 'L' conversion (ITU-R 601-2 luma) of float32 [H, W, 3], unrounded, [H, W, 1]."""
  red, green, blue = tf.split(image, 3, axis=-1)
  # Summed in this order it equals reduce_sum(image * weights, -1) bit for bit.
  return (red * 0.299 + green * 0.587) + blue * 0.114


def _fill_shifted(image: tf.Tensor) -> tf.Tensor:
  """uint8 [H, W, 3] -> float32 image - FILL_COLOR.

  The resampling below fills with zero; shifting by the fill colour turns that
  into the per-channel colour, with bilinear edges blending into it.
  """
  h, w, c = _dims(image)
  shifted = tf.cast(_rows(image), tf.float32) - _tiled(FILL_COLOR, w)
  return tf.reshape(shifted, [h, w, c])


def _fill_unshifted(shifted: tf.Tensor) -> tf.Tensor:
  """Inverse of `_fill_shifted`, rounded to uint8."""
  h, w, c = _dims(shifted)
  return tf.reshape(imagenet.round_uint8(_rows(shifted) + _tiled(FILL_COLOR, w)), [h, w, c])


def _affine(image: tf.Tensor, transform: tf.Tensor) -> tf.Tensor:
  """Applies an output->input affine map, filling outside with FILL_COLOR.

  Args:
    image: uint8 [H, W, 3].
    transform: float32 [6] (a0, a1, a2, b0, b1, b2): the output pixel (x, y)
      samples the input at (a0 x + a1 y + a2, b0 x + b1 y + b2), as in PIL.

  Returns:
    uint8 [H, W, 3].
  """
  h, w, _ = _dims(image)
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=_fill_shifted(image)[None],
      transforms=tf.concat([transform, tf.zeros([2])], 0)[None],
      output_shape=tf.stack([h, w]),
      fill_value=0.0,
      interpolation='BILINEAR',
      fill_mode='CONSTANT')[0]
  return _fill_unshifted(out)


def _translate(image: tf.Tensor, pixels: tf.Tensor, axis: int) -> tf.Tensor:
  """`_affine` with a pure translation by `pixels` along `axis`, bit for bit.

  Output index k samples input k + pixels, bilinearly between the taps
  k + floor(pixels) and k + floor(pixels) + 1, with the projective op's weights.

  Args:
    image: uint8 [H, W, 3].
    pixels: float32 scalar.
    axis: 0 (vertical) or 1 (horizontal).

  Returns:
    uint8 [H, W, 3].
  """
  h, w, c = _dims(image)
  size = (h, w)[axis]
  # Fill colour on both sides, so that both taps are plain uint8 slices.
  fill_shape = [h, w, c]
  fill_shape[axis] = size + 1
  fill = tf.broadcast_to(tf.constant(FILL_COLOR, tf.uint8), fill_shape)
  padded = tf.concat([fill, image, fill], axis)
  floor = tf.clip_by_value(tf.cast(tf.floor(pixels), tf.int32), -size - 1, size)
  unit = [0, 0, 0]
  unit[axis] = 1
  begin = (size + 1 + floor) * tf.constant(unit)
  lower_tap = _fill_shifted(tf.slice(padded, begin, [h, w, c]))
  upper_tap = _fill_shifted(tf.slice(padded, begin + tf.constant(unit), [h, w, c]))
  # The op samples at k + pixels rounded to float32, which lies in
  # [k + floor, k + floor + 1]: these are its weights.
  k = tf.range(size, dtype=tf.float32)
  if axis == 1:  # Per column, repeated over channels to broadcast along rows.
    k = tf.repeat(k, c)
  else:
    k = k[:, None]
  coords = k + pixels
  lower = k + tf.cast(floor, tf.float32)
  out = ((lower + 1.0) - coords) * _rows(lower_tap) + (coords - lower) * _rows(upper_tap)
  return _fill_unshifted(tf.reshape(out, [h, w, c]))


def _shear_rows(image: tf.Tensor, shear: tf.Tensor) -> tf.Tensor:
  """`_affine` with transform (1, shear, 0, 0, 1, 0), up to float rounding.

  Each row is an image of its own for CropAndResize, whose box shifts it by
  shear * y: bilinear like the projective op, at a fraction of its cost (their
  float formulas differ, so ~2% of pixels come out 1 apart).

  Args:
    image: uint8 [H, W, 3].
    shear: float32 scalar.

  Returns:
    uint8 [H, W, 3].
  """
  h, w, c = _dims(image)
  # A column of zeros (the shifted fill) each side, for the blended edges.
  padded = tf.pad(_fill_shifted(image), [[0, 0], [1, 1], [0, 0]])[:, None]
  shift = shear * tf.range(h, dtype=tf.float32)
  # A box from x1 to x2 samples x1 (Wp - 1) + k (x2 - x1) (Wp - 1) / (W - 1) in
  # a row of width Wp = W + 2: here k + shift + 1, the padded position of
  # k + shift.
  x1 = (shift + 1.0) / tf.cast(w + 1, tf.float32)
  x2 = (shift + tf.cast(w, tf.float32)) / tf.cast(w + 1, tf.float32)
  zeros = tf.zeros_like(shift)
  out = tf.image.crop_and_resize(
      padded, tf.stack([zeros, x1, zeros, x2], 1), tf.range(h), tf.stack([1, w]),
      extrapolation_value=0.0)
  return _fill_unshifted(tf.reshape(out, [h, w, c]))


def auto_contrast(image, level):
  del level
  h, w, c = _dims(image)
  lo = tf.cast(tf.reduce_min(image, axis=[0, 1]), tf.float32)
  hi = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.float32)
  scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
  offset = tf.where(hi > lo, -lo * scale, 0.0)
  out = tf.cast(_rows(image), tf.float32) * _tiled(scale, w) + _tiled(offset, w)
  return tf.reshape(tf.cast(tf.clip_by_value(tf.floor(out), 0.0, 255.0), tf.uint8), [h, w, c])


def equalize(image, level):
  """PIL `ImageOps.equalize`: a histogram and lookup table per channel."""
  del level
  h, w, c = _dims(image)
  # Channel k's values offset by 256 k: one bincount and one gather for all.
  values = tf.cast(_rows(image), tf.int32) + _tiled([0, 256, 512], w, tf.int32)
  hist = tf.reshape(tf.math.bincount(values, minlength=768, maxlength=768), [3, 256])
  bins = tf.range(256)
  last_nonzero = tf.gather(
      hist, tf.reduce_max(tf.where(hist > 0, bins, 0), axis=1), batch_dims=1)
  step = ((tf.reduce_sum(hist, axis=1) - last_nonzero) // 255)[:, None]
  cum_before = tf.cumsum(hist, axis=1, exclusive=True)
  lut = tf.minimum((step // 2 + cum_before) // tf.maximum(step, 1), 255)
  lut = tf.where(step > 0, lut, bins)  # PIL leaves such channels as they are.
  out = tf.gather(tf.reshape(tf.cast(lut, tf.uint8), [768]), values)
  return tf.reshape(out, [h, w, c])


def invert(image, level):
  del level
  return 255 - image


def rotate(image, level):
  degrees = level / _MAX_LEVEL * _ROTATE_DEGREES
  theta = degrees * math.pi / 180.0
  h, w, _ = _dims(image)
  cy, cx = (tf.cast(h, tf.float32) - 1) / 2, (tf.cast(w, tf.float32) - 1) / 2
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
  """Inverts the pixels >= threshold (255 - x is x XOR 255 in uint8)."""
  threshold = 256 - tf.cast(level / _MAX_LEVEL * 256, tf.int32)
  # x >= threshold as x > threshold - 1 in uint8; the `or` covers threshold <= 0.
  above = tf.cast(tf.clip_by_value(threshold - 1, 0, 255), tf.uint8)
  invert_mask = tf.cast((image > above) | (threshold <= 0), tf.uint8)
  return tf.bitwise.bitwise_xor(image, invert_mask * 255)


def solarize_add(image, level):
  """Adds int(level / 10 * 110) to the pixels < 128, saturating at 255."""
  add = tf.cast(tf.clip_by_value(tf.cast(level / _MAX_LEVEL * 110, tf.int32), 0, 255), tf.uint8)
  dark = tf.cast(image < 128, tf.uint8)
  return image + dark * tf.minimum(255 - image, add)


def _enhance_factor(level):
  # timm `_enhance_increasing_level`; the sign is already in `level`.
  return 1.0 + level / _MAX_LEVEL * 0.9


def color_increasing(image, level):
  image_f = tf.cast(image, tf.float32)
  return _blend(tf.tile(_grayscale(image_f), [1, 1, 3]), image_f, _enhance_factor(level))


def contrast_increasing(image, level):
  image_f = tf.cast(image, tf.float32)
  mean = tf.floor(tf.reduce_mean(_grayscale(image_f)) + 0.5)
  return _blend(mean, image_f, _enhance_factor(level))


def brightness_increasing(image, level):
  # The blend with black: 0 + factor * (image - 0).
  return imagenet.round_uint8(_enhance_factor(level) * tf.cast(image, tf.float32))


def sharpness_increasing(image, level):
  """Blend with PIL's SMOOTH filter; PIL leaves the one-pixel border unfiltered."""
  image_f = tf.cast(image, tf.float32)
  # SMOOTH is [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13: a 3x3 box sum plus 4x the
  # centre, exact in float32; no sum / 13 lies near a rounding tie.
  row_sums = image_f[:, :-2] + image_f[:, 1:-1] + image_f[:, 2:]
  centre = image_f[1:-1, 1:-1]
  smooth = tf.round((row_sums[:-2] + row_sums[1:-1] + row_sums[2:] + 4.0 * centre) / 13.0)
  # The degenerate image: smooth inside, the image itself on the border.
  degenerate = tf.pad(smooth - centre, [[1, 1], [1, 1], [0, 0]]) + image_f
  return _blend(degenerate, image_f, _enhance_factor(level))


def shear_x(image, level):
  return _shear_rows(image, level / _MAX_LEVEL * _SHEAR)


def shear_y(image, level):
  # Output (x, y) samples (x, y + shear x): shear_x of the transposed image.
  transposed = _shear_rows(tf.transpose(image, [1, 0, 2]), level / _MAX_LEVEL * _SHEAR)
  return tf.transpose(transposed, [1, 0, 2])


def translate_x_rel(image, level):
  pixels = level / _MAX_LEVEL * _TRANSLATE_PCT * tf.cast(_dims(image)[1], tf.float32)
  return _translate(image, pixels, axis=1)


def translate_y_rel(image, level):
  pixels = level / _MAX_LEVEL * _TRANSLATE_PCT * tf.cast(_dims(image)[0], tf.float32)
  return _translate(image, pixels, axis=0)


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
  image = tf.ensure_shape(image, [None, None, 3])
  # Every draw for all ops at once: a few RNG ops instead of a few per op.
  index_seed, uniform_seed, normal_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  op_index = tf.random.stateless_uniform(
      [num_ops], index_seed, 0, len(RAND_INCREASING_OPS), tf.int32)
  apply, negate = tf.unstack(
      tf.random.stateless_uniform([2, num_ops], uniform_seed) < [[prob], [0.5]])
  level = magnitude + magnitude_std * tf.random.stateless_normal([num_ops], normal_seed)
  level = tf.clip_by_value(level, 0.0, _MAX_LEVEL)
  unsigned = tf.gather([op in _UNSIGNED_OPS for op in RAND_INCREASING_OPS], op_index)
  level = tf.where(negate & ~unsigned, -level, level)
  op_index, level = tf.boolean_mask(op_index, apply), tf.boolean_mask(level, apply)

  # A Case op over traced functions, not tf.switch_case: tf.data lowers that to
  # Switch/Merge nodes, and then each pass pays for every node of every branch, taken
  # or not; a Case runs only the taken function.
  # The loop runs over the applied ops only.
  specs = (tf.TensorSpec(image.shape, tf.uint8), tf.TensorSpec([], tf.float32))
  branches = [tf.function(op, autograph=False).get_concrete_function(*specs)
              for op in RAND_INCREASING_OPS]

  def apply_op(i, image):
    image = tf.raw_ops.Case(
        branch_index=op_index[i], input=[image, level[i]], Tout=[tf.uint8],
        branches=branches, output_shapes=[image.shape])[0]
    return i + 1, image

  _, image = tf.while_loop(lambda i, _: i < tf.size(op_index), apply_op, (0, image))
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

  # Noise for the box only, drawn only when erasing (as timm does): a full-size draw
  # and select would cost every image, erased or not.
  def paste_noise():
    noise = tf.random.stateless_normal([box_h, box_w, shape[2]], seeds[5])
    band = image[top:top + box_h]
    band = tf.concat([band[:, :left], noise, band[:, left + box_w:]], 1)
    return tf.concat([image[:top], band, image[top + box_h:]], 0)

  return tf.cond(erase, paste_noise, lambda: image)
