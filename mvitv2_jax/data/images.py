"""The image classification source: ImageNet's train and eval transforms on the record stream.

Train: decode only the RandomResizedCrop window, resize it (bicubic), flip, RandAugment,
normalise and erase, each drawn from the example's stateless seed. Eval: resize, centre
crop and normalise (`imagenet.eval_image`). The process split, seeds, exact resume and
eval padding are `stream`'s.
"""

import functools
from typing import Iterator

import jax
import ml_collections
import tensorflow as tf

from mvitv2_jax.data import augment
from mvitv2_jax.data import imagenet
from mvitv2_jax.data import random_resized_crop
from mvitv2_jax.data import stream
from mvitv2_jax.data import tfds_access


# ---------------------------------------------------------------------------
# Per-example transforms.
# ---------------------------------------------------------------------------


def _decode_and_random_crop(image_bytes: tf.Tensor, seed: tf.Tensor,
                            min_scale: float) -> tf.Tensor:
  """RandomResizedCrop's crop, decoding only the crop window for JPEGs.

  Args:
    image_bytes: string [], an encoded image.
    seed: int64 [2].
    min_scale: smallest crop area as a fraction of the image.

  Returns:
    uint8 [h, w, 3], the crop.
  """
  def jpeg():
    begin, size = random_resized_crop.sample_window(
        tf.image.extract_jpeg_shape(image_bytes), seed, min_scale=min_scale)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

  def other():  # PNG, BMP, GIF: decode fully, then crop.
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8,
                               expand_animations=False)
    begin, size = random_resized_crop.sample_window(tf.shape(image), seed, min_scale=min_scale)
    return tf.slice(image, begin, size)

  return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)


def _resize_crop_uint8(crop: tf.Tensor, size: int) -> tf.Tensor:
  """`imagenet.resize_uint8(crop, size, size)`, faster when it only upscales.

  Upscaling, the antialiased kernel is plain Keys bicubic with the out-of-image
  taps dropped and the rest renormalised; ResizeBicubic uses the same kernel
  with edge-clamped taps. The two differ by < 0.25 before rounding (1.5-3% of
  pixels by 1), and ResizeBicubic is several times cheaper.

  Args:
    crop: uint8 [h, w, 3].
    size: output height and width.

  Returns:
    uint8 [size, size, 3].
  """
  shape = tf.shape(crop)
  return tf.cond(
      (shape[0] <= size) & (shape[1] <= size),
      lambda: imagenet.round_uint8(tf.image.resize(crop, [size, size], method='bicubic')),
      lambda: imagenet.resize_uint8(crop, size, size))


def _train_example(example: dict, seed: tf.Tensor, *,
                   config: ml_collections.ConfigDict) -> dict:
  """Decode, RandomResizedCrop, flip, RandAugment, normalise, erase one example."""
  aug = config.aug
  crop_seed, flip_seed, ra_seed, erase_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4))
  size = config.image_size
  image = _decode_and_random_crop(example['image'], crop_seed, aug.min_crop_scale)
  image = _resize_crop_uint8(image, size)
  if aug.flip:
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    # tf.reverse, not image[:, ::-1]: the negative-stride slice is far slower.
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  if aug.randaugment_num_ops > 0:
    image = augment.rand_augment(
        image, ra_seed, num_ops=aug.randaugment_num_ops,
        magnitude=aug.randaugment_magnitude,
        magnitude_std=aug.randaugment_magnitude_std)
  image = imagenet.normalize(image)
  if aug.random_erase_prob > 0:
    image = augment.random_erase(image, erase_seed, prob=aug.random_erase_prob)
  return {'image': tf.ensure_shape(image, [size, size, 3]),
          'label': tf.cast(example['label'], tf.int32)}


def _eval_example(example: dict, *, size: int, crop_pct: float) -> dict:
  return {'image': imagenet.eval_image(example['image'], size, crop_pct),
          'label': tf.cast(example['label'], tf.int32)}


# ---------------------------------------------------------------------------
# The data source the trainer calls.
# ---------------------------------------------------------------------------


def num_examples(config: ml_collections.ConfigDict, split: str) -> int:
  """Images of `split`, over all processes: one per record (`tfds_access.num_examples`)."""
  return tfds_access.num_examples(config, split)


def _train_batches(config: ml_collections.ConfigDict, start_step: int,
                   process_index: int, process_count: int) -> Iterator[stream.Batch]:
  """`create_train_iterator` for an explicit process (tests simulate several)."""
  return stream.train_batches(config, start_step, process_index, process_count,
                              transform=functools.partial(_train_example, config=config))


def create_train_iterator(config: ml_collections.ConfigDict, *,
                          start_step: int = 0) -> Iterator[stream.Batch]:
  """Endless augmented train batches for this process.

  Epochs are `num_examples // process_count // local_batch` steps; the last
  partial batch of each epoch is dropped.

  Args:
    config: the experiment config (data and `aug` fields, seed, image_size).
    start_step: number of batches already consumed; the iterator starts at the
      batch a fresh iterator would yield after that many.

  Returns:
    Iterator of {'image': float32 [B/P, S, S, 3] normalised with the ImageNet
    mean/std, 'label': int32 [B/P]}, B = config.batch_size, P = process count,
    S = config.image_size.

  Raises:
    tfds_access.DatasetNotPreparedError: the dataset is not prepared; says how to do it.
  """
  return _train_batches(config, start_step, jax.process_index(), jax.process_count())


def _eval_batches(config: ml_collections.ConfigDict, process_index: int,
                  process_count: int) -> Iterator[stream.Batch]:
  """`create_eval_iterator` for an explicit process (tests simulate several)."""
  return stream.eval_batches(config, process_index, process_count, transform=functools.partial(
      _eval_example, size=config.image_size, crop_pct=config.eval_crop_pct))


def create_eval_iterator(config: ml_collections.ConfigDict) -> Iterator[stream.Batch]:
  """One pass over `config.eval_split` for this process.

  Args:
    config: the experiment config (dataset, eval_split, eval_batch_size,
      image_size, eval_crop_pct).

  Returns:
    Iterator of {'image': float32 [E/P, S, S, 3], 'label': int32 [E/P],
    'mask': bool [E/P]}, E = config.eval_batch_size. Padding examples are zeros
    with mask False; every process yields the same number of batches and each
    eval example appears in exactly one batch of one process.

  Raises:
    tfds_access.DatasetNotPreparedError: the dataset is not prepared; says how to do it.
  """
  return _eval_batches(config, jax.process_index(), jax.process_count())
