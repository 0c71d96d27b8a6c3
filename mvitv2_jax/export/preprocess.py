"""A model's evaluation preprocessing in TensorFlow, for the SavedModel's uint8 signature.

Images follow the original image pipelines (torchvision Resize, PIL bicubic, CenterCrop:
the same transform as `mvitv2_jax.data.imagenet.eval_transform`), clips PySlowFast's test
transform (bilinear short-side scaling on float frames, the centre crop of `uniform_crop`).
"""

import tensorflow as tf

from mvitv2_jax.data import imagenet
from mvitv2_jax.pretrained import table


def _resize_short_side(frames: tf.Tensor, size: int, interpolation: str) -> tf.Tensor:
  """uint8 [N, H, W, 3] -> float32 [N, H', W', 3], the short side `size`, the long side
  floor(long * size / short) as torchvision and PySlowFast compute it."""
  shape = tf.shape(frames)
  h, w = shape[1], shape[2]
  scale = lambda n, short: tf.cast(tf.floor(tf.cast(n, tf.float64) * size
                                            / tf.cast(short, tf.float64)), tf.int32)
  new_h = tf.where(h <= w, size, scale(h, w))
  new_w = tf.where(h <= w, scale(w, h), size)
  if interpolation == 'bicubic':  # PIL: antialiased, and its output is uint8 again.
    return tf.cast(imagenet.resize_uint8(frames, new_h, new_w), tf.float32)
  return tf.image.resize(tf.cast(frames, tf.float32), [new_h, new_w], method='bilinear')


def _centre_crop(frames: tf.Tensor, size: int, rounding) -> tf.Tensor:
  shape = tf.shape(frames)
  top = tf.cast(rounding((shape[1] - size) / 2), tf.int32)
  left = tf.cast(rounding((shape[2] - size) / 2), tf.int32)
  return frames[:, top:top + size, left:left + size]


def preprocess(inputs: tf.Tensor, spec: table.Preprocessing) -> tf.Tensor:
  """uint8 images [B, H, W, 3] or clips [B, T, H, W, 3] (RGB) -> the model's float32 input.

  Args:
    inputs: any H and W; clips have the model's T frames, already sampled.
    spec: the checkpoint's preprocessing (resize, crop, channels, mean, std).

  Returns:
    float32 [B, S, S, 3] or [B, T, S, S, 3], S = `spec.crop`.
  """
  shape = tf.shape(inputs)
  frames = tf.reshape(inputs, [-1, shape[-3], shape[-2], 3])
  frames = _resize_short_side(frames, spec.resize, spec.interpolation)
  # torchvision's CenterCrop rounds the offset (half to even); PySlowFast's takes the ceiling.
  frames = _centre_crop(frames, spec.crop,
                        tf.round if spec.interpolation == 'bicubic' else tf.math.ceil)
  mean = tf.constant([255 * m for m in spec.mean], tf.float32)
  std = tf.constant([255 * s for s in spec.std], tf.float32)
  frames = (frames - mean) / std
  if spec.channels == 'BGR':  # PySlowFast reverses the channels after normalising.
    frames = frames[..., ::-1]
  return tf.reshape(frames, tf.concat([shape[:-3], [spec.crop, spec.crop, 3]], axis=0))
