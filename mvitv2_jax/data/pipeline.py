"""TFDS -> NumPy host batches for training and evaluation.

Train: each process reads its own slice; every epoch is shuffled by a seed
derived from (config.seed, process, epoch) and every example is augmented from a
stateless seed derived from (that seed, index in the epoch), so the stream is a
pure function of the config and `start_step` resumes it exactly by skipping
still-encoded records. Eval: one ordered pass, padded with masked zeros so every
process yields the same number of batches and each example counts once.
"""

import functools
import itertools
import os
from typing import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mvitv2_jax.data import augment
from mvitv2_jax.data import demo_dataset
from mvitv2_jax.data import imagenet
from mvitv2_jax.data import random_resized_crop
from mvitv2_jax.data import video_demo
from mvitv2_jax.data import video_folder

_SELF_BUILDING_DATASETS = (demo_dataset.MViTv2DemoShapes.name,
                           video_demo.MViTv2DemoMotion.name)

Batch = dict[str, np.ndarray]
# (index in the epoch, encoded record, epoch seed) -> augmented example(s).
Transform = Callable[[tf.Tensor, dict, int], dict]


class DatasetNotPreparedError(RuntimeError):
  """The TFDS dataset has not been downloaded and prepared."""


# ---------------------------------------------------------------------------
# Dataset access.
# ---------------------------------------------------------------------------


def _builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  builder = tfds.builder(config.dataset, data_dir=config.data_dir or None)
  if builder.name in _SELF_BUILDING_DATASETS and not builder.is_prepared():
    builder.download_and_prepare()
  return builder


def _prepare_instructions(builder: tfds.core.DatasetBuilder) -> str:
  root = os.fspath(builder.data_dir_root)
  if builder.name == 'imagenet2012':
    manual_dir = os.path.join(root, 'downloads', 'manual')
    return (
        f'Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from '
        f'https://image-net.org/download-images (registration needed) into '
        f'{manual_dir}/, then run: tfds build imagenet2012 --data_dir={root}')
  if builder.name == video_folder.MViTv2VideoFrames.name:
    return video_folder.prepare_instructions(builder.builder_config.name, root)
  return f'Prepare it with: tfds build {builder.name} --data_dir={root}'


def _read(builder: tfds.core.DatasetBuilder, split, *, encoded_key: str = 'image',
          shuffle_seed=None, options: tf.data.Options | None = None) -> tf.data.Dataset:
  """Records with `encoded_key` left encoded (e.g. image bytes), in a fixed order per seed."""
  read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, options=options)
  try:
    return builder.as_dataset(
        split=split, shuffle_files=shuffle_seed is not None,
        decoders={encoded_key: tfds.decode.SkipDecoding()}, read_config=read_config)
  except AssertionError as e:  # What TFDS raises when the data is missing.
    raise DatasetNotPreparedError(
        f'Dataset {builder.name!r} is not prepared in {builder.data_dir_root}. '
        f'{_prepare_instructions(builder)}') from e


def num_examples(config: ml_collections.ConfigDict, split: str) -> int:
  """Number of examples of `split`, over all processes.

  Args:
    config: the experiment config (dataset, data_dir and the fallbacks).
    split: a TFDS split string, slices allowed (e.g. 'train[:1000]').

  Returns:
    The count from TFDS metadata, else `config.num_train_examples` for
    `config.train_split` or `config.num_eval_examples` for `config.eval_split`.

  Raises:
    ValueError: when neither the metadata nor the config knows the count.
  """
  builder = _builder(config)
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError):  # No metadata, e.g. under tfds.testing.mock_data.
    pass
  fallback = {config.train_split: config.num_train_examples,
              config.eval_split: config.num_eval_examples}.get(split, -1)
  if fallback > 0:
    return fallback
  hint = '' if builder.is_prepared() else ' ' + _prepare_instructions(builder)
  raise ValueError(
      f'Number of examples of {config.dataset}:{split} is unknown: TFDS has no '
      f'metadata for it and config.num_train_examples / num_eval_examples is '
      f'not set.{hint}')


def _process_split(split: str, process_index: int, process_count: int, *,
                   drop_remainder: bool):
  """This process's disjoint slice of `split` (equal sizes if drop_remainder)."""
  return tfds.split_for_jax_process(
      split, process_index=process_index, process_count=process_count,
      drop_remainder=drop_remainder)


def _local_batch_size(global_batch: int, process_count: int) -> int:
  if global_batch % process_count:
    raise ValueError(f'Batch size {global_batch} is not divisible by the '
                     f'{process_count} processes.')
  return global_batch // process_count


def _options() -> tf.data.Options:
  options = tf.data.Options()
  # Keeps the output order independent of thread timing: needed for exact resume.
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  return options


# ---------------------------------------------------------------------------
# Per-example preprocessing.
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


def _train_example(index: tf.Tensor, example: dict, epoch_seed: int, *,
                   config: ml_collections.ConfigDict) -> dict:
  """Decode, RandomResizedCrop, flip, RandAugment, normalise, erase one example."""
  aug = config.aug
  seed = tf.stack([tf.constant(epoch_seed, tf.int64), index])
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
# Train iterator.
# ---------------------------------------------------------------------------


def _epoch_seed(seed: int, process_index: int, epoch: int) -> int:
  """A 63-bit seed for one process's epoch (shuffle and augmentation)."""
  state = np.random.SeedSequence([seed, process_index, epoch]).generate_state(2, np.uint32)
  return int(state[0]) << 31 | int(state[1]) >> 1


def _train_epoch(builder, config, *, epoch: int, skip: int, steps: int,
                 local_batch: int, process_index: int, process_count: int,
                 transform: Transform, encoded_key: str,
                 per_record: int) -> tf.data.Dataset:
  """Batches of one epoch from record `skip` on; `steps` full batches in all."""
  epoch_seed = _epoch_seed(config.seed, process_index, epoch)
  split = _process_split(config.train_split, process_index, process_count,
                         drop_remainder=True)
  ds = _read(builder, split, encoded_key=encoded_key, shuffle_seed=epoch_seed,
             options=_options())
  ds = ds.shuffle(config.shuffle_buffer, seed=epoch_seed)
  # Index before skipping so that a record's augmentation seed is the same
  # whether the epoch was started fresh or resumed.
  records_per_batch = local_batch // per_record
  ds = ds.enumerate().take(steps * records_per_batch).skip(skip)
  ds = ds.map(lambda i, ex: transform(i, ex, epoch_seed),
              num_parallel_calls=tf.data.AUTOTUNE)
  if per_record > 1:
    ds = ds.unbatch()
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def train_batches(config: ml_collections.ConfigDict, start_step: int, process_index: int,
                  process_count: int, *, transform: Transform, encoded_key: str = 'image',
                  per_record: int = 1) -> Iterator[Batch]:
  """The train stream of any record type: process split, per-epoch seeds, exact resume.

  Args:
    config: the experiment config (dataset, train_split, batch_size, seed, shuffle_buffer).
    start_step: batches already consumed; the stream resumes after them.
    process_index: this process.
    process_count: number of processes.
    transform: `(index int64 [], record, epoch_seed int) -> example dict`, a pure
      function of its arguments; with `per_record` > 1 every value has a leading axis of
      `per_record` examples (e.g. several augmented clips of one video).
    encoded_key: the record feature read still encoded (decoded by `transform`).
    per_record: examples `transform` makes of one record.

  Returns:
    Endless batches of `config.batch_size / process_count` examples; epochs are
    `records // process_count // (local_batch / per_record)` batches.
  """
  builder = _builder(config)
  _read(builder, config.train_split, encoded_key=encoded_key)  # Fail now, not later.
  local_batch = _local_batch_size(config.batch_size, process_count)
  if local_batch % per_record:
    raise ValueError(f'The local batch of {local_batch} is not a multiple of the '
                     f'{per_record} examples made of each record.')
  records_per_batch = local_batch // per_record
  steps_per_epoch = (num_examples(config, config.train_split)
                     // process_count // records_per_batch)
  if steps_per_epoch < 1:
    raise ValueError(f'{config.dataset}:{config.train_split} has fewer records '
                     f'per process than one local batch needs ({records_per_batch}).')
  first_epoch, first_step = divmod(start_step, steps_per_epoch)

  def batches():
    for epoch in itertools.count(first_epoch):
      skip = first_step * records_per_batch if epoch == first_epoch else 0
      yield from _train_epoch(
          builder, config, epoch=epoch, skip=skip, steps=steps_per_epoch,
          local_batch=local_batch, process_index=process_index,
          process_count=process_count, transform=transform, encoded_key=encoded_key,
          per_record=per_record).as_numpy_iterator()

  return batches()


def _train_batches(config: ml_collections.ConfigDict, start_step: int,
                   process_index: int, process_count: int) -> Iterator[Batch]:
  """`create_train_iterator` for an explicit process (tests simulate several)."""
  return train_batches(config, start_step, process_index, process_count,
                       transform=functools.partial(_train_example, config=config))


def create_train_iterator(config: ml_collections.ConfigDict, *,
                          start_step: int = 0) -> Iterator[Batch]:
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
    DatasetNotPreparedError: the dataset is not prepared; says how to do it.
  """
  return _train_batches(config, start_step, jax.process_index(), jax.process_count())


# ---------------------------------------------------------------------------
# Eval iterator.
# ---------------------------------------------------------------------------


def eval_batches(config: ml_collections.ConfigDict, process_index: int, process_count: int,
                 *, transform: Callable[[dict], dict],
                 encoded_key: str = 'image') -> Iterator[Batch]:
  """One ordered pass over `config.eval_split` of any record type, padded and masked.

  Args:
    config: the experiment config (dataset, eval_split, eval_batch_size).
    process_index: this process.
    process_count: number of processes.
    transform: `record -> example dict` with static shapes.
    encoded_key: the record feature read still encoded (decoded by `transform`).

  Returns:
    Batches of `eval_batch_size / process_count` examples plus `mask`; padding
    examples are zeros with mask False, every process yields the same number of
    batches and each record appears in exactly one batch of one process.
  """
  builder = _builder(config)
  local_batch = _local_batch_size(config.eval_batch_size, process_count)
  split = _process_split(config.eval_split, process_index, process_count,
                         drop_remainder=False)
  ds = _read(builder, split, encoded_key=encoded_key, options=_options())
  total = num_examples(config, config.eval_split)
  # Slices differ by at most one example; all processes pad to the largest.
  num_batches = -(-(-(-total // process_count)) // local_batch)
  padded_size = num_batches * local_batch
  ds = ds.map(lambda ex: {**transform(ex), 'mask': tf.constant(True)},
              num_parallel_calls=tf.data.AUTOTUNE)
  padding = tf.data.Dataset.from_tensors(
      {**tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec),
       'mask': tf.constant(False)}).repeat(padded_size)
  ds = ds.concatenate(padding).take(padded_size)
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.as_numpy_iterator()


def _eval_batches(config: ml_collections.ConfigDict, process_index: int,
                  process_count: int) -> Iterator[Batch]:
  """`create_eval_iterator` for an explicit process (tests simulate several)."""
  return eval_batches(config, process_index, process_count, transform=functools.partial(
      _eval_example, size=config.image_size, crop_pct=config.eval_crop_pct))


def create_eval_iterator(config: ml_collections.ConfigDict) -> Iterator[Batch]:
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
    DatasetNotPreparedError: the dataset is not prepared; says how to do it.
  """
  return _eval_batches(config, jax.process_index(), jax.process_count())

