"""The record stream under every data source: process split, seeds, exact resume, padding.

Train: each process reads its own slice; every epoch is shuffled by a seed
derived from (config.seed, process, epoch) and every example is augmented from a
stateless seed derived from (that seed, index in the epoch), so the stream is a
pure function of the config and `start_step` resumes it exactly by skipping
still-encoded records. Eval: one ordered pass, padded with masked zeros so every
process yields the same number of batches and each example counts once. A data
source (`images`, `video`) brings the transform of its records. A record that fails
to decode never stops either stream (`unreadable`): in training it is replaced by the
next good example of its batch, in evaluation masked out and counted.
"""

import itertools
from typing import Callable, Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mvitv2_jax.data import tfds_access
from mvitv2_jax.data import unreadable

Batch = dict[str, np.ndarray]
# (encoded record, its stateless seed int64 [2]) -> augmented example(s).
Transform = Callable[[dict, tf.Tensor], dict]


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
# Train stream.
# ---------------------------------------------------------------------------


def _epoch_seed(seed: int, process_index: int, epoch: int) -> int:
  """A 63-bit seed for one process's epoch (shuffle and augmentation)."""
  state = np.random.SeedSequence([seed, process_index, epoch]).generate_state(2, np.uint32)
  return int(state[0]) << 31 | int(state[1]) >> 1


def _example_seed(epoch_seed: int, index: tf.Tensor) -> tf.Tensor:
  """int64 [2]: the seed of the example at `index` (int64 []) of an epoch."""
  return tf.stack([tf.constant(epoch_seed, tf.int64), index])


def _train_epoch(builder, config, *, epoch: int, skip: int, steps: int,
                 local_batch: int, process_index: int, process_count: int,
                 transform: Transform, encoded_key: str,
                 per_record: int) -> tf.data.Dataset:
  """Batches of one epoch from record `skip` on; `steps` full batches in all."""
  epoch_seed = _epoch_seed(config.seed, process_index, epoch)
  split = _process_split(config.train_split, process_index, process_count,
                         drop_remainder=True)
  ds = tfds_access.read(builder, split, encoded_key=encoded_key, shuffle_seed=epoch_seed,
                        options=_options(), add_tfds_id=True)
  ds = ds.shuffle(config.shuffle_buffer, seed=epoch_seed)
  # Index before skipping so that a record's augmentation seed is the same
  # whether the epoch was started fresh or resumed.
  records_per_batch = local_batch // per_record
  ds = ds.enumerate().take(steps * records_per_batch).skip(skip)
  ds = unreadable.flag_failures(
      ds, lambda i, record: transform(record, _example_seed(epoch_seed, i)),
      per_record=per_record)
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
    transform: `(record, seed int64 [2]) -> example dict`, a pure function of its
      arguments; the seed is (epoch seed, index in the epoch). With `per_record` > 1
      every value has a leading axis of `per_record` examples (e.g. several augmented
      clips of one video).
    encoded_key: the record feature read still encoded (decoded by `transform`).
    per_record: examples `transform` makes of one record.

  Returns:
    Endless batches of `config.batch_size / process_count` examples; epochs are
    `records // process_count // (local_batch / per_record)` batches.
  """
  builder = tfds_access.dataset_builder(config)
  tfds_access.read(builder, config.train_split, encoded_key=encoded_key)  # Fail now, not later.
  local_batch = _local_batch_size(config.batch_size, process_count)
  if local_batch % per_record:
    raise ValueError(f'The local batch of {local_batch} is not a multiple of the '
                     f'{per_record} examples made of each record.')
  records_per_batch = local_batch // per_record
  steps_per_epoch = (tfds_access.num_examples(config, config.train_split)
                     // process_count // records_per_batch)
  if steps_per_epoch < 1:
    raise ValueError(f'{config.dataset}:{config.train_split} has fewer records '
                     f'per process than one local batch needs ({records_per_batch}).')
  first_epoch, first_step = divmod(start_step, steps_per_epoch)

  def batches():
    for epoch in itertools.count(first_epoch):
      first = first_step if epoch == first_epoch else 0
      where = lambda k, epoch=epoch, first=first: (
          f'epoch {epoch}, train step {epoch * steps_per_epoch + first + k + 1}')
      yield from unreadable.fill_train_batches(_train_epoch(
          builder, config, epoch=epoch, skip=first * records_per_batch,
          steps=steps_per_epoch, local_batch=local_batch, process_index=process_index,
          process_count=process_count, transform=transform, encoded_key=encoded_key,
          per_record=per_record).as_numpy_iterator(), where)

  return batches()


# ---------------------------------------------------------------------------
# Eval stream.
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
    batches and each record appears in exactly one batch of one process. A record
    that fails to decode is masked out too; the iterator's `unreadable` counts them.
  """
  builder = tfds_access.dataset_builder(config)
  local_batch = _local_batch_size(config.eval_batch_size, process_count)
  split = _process_split(config.eval_split, process_index, process_count,
                         drop_remainder=False)
  ds = tfds_access.read(builder, split, encoded_key=encoded_key, options=_options(),
                        add_tfds_id=True)
  total = tfds_access.num_examples(config, config.eval_split)
  # Slices differ by at most one example; all processes pad to the largest.
  num_batches = -(-(-(-total // process_count)) // local_batch)
  padded_size = num_batches * local_batch
  ds = unreadable.flag_failures(ds, lambda ex: {**transform(ex), 'mask': tf.constant(True)})
  padding = tf.data.Dataset.from_tensors(
      {**tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec),
       'mask': tf.constant(False), unreadable.OK_KEY: tf.constant(True)}).repeat(padded_size)
  ds = ds.concatenate(padding).take(padded_size)
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return unreadable.EvalBatches(ds.as_numpy_iterator())
