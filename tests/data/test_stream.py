"""Tests for mvitv2_jax.data.stream, with transforms that decode nothing: the machinery alone."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mvitv2_jax.data import stream
from tests.helpers import training


def _config(data_dir, **overrides):
  # Batches of 8 records: 5 steps per epoch.
  return training.demo_shapes_config(data_dir, train_split='train[:40]', **overrides)


def _seed_of(record, seed):
  """The seed the stream gave the record: (epoch seed, index in the epoch)."""
  return {'label': tf.cast(record['label'], tf.int32), 'seed': seed}


def _two_copies(record, seed):
  del seed
  return {'label': tf.fill([2], tf.cast(record['label'], tf.int32)), 'copy': tf.range(2)}


def test_epoch_seeds_are_pinned():
  # Any change here changes every stream: shuffles and augmentations alike.
  seeds = [stream._epoch_seed(*args) for args in ((0, 0, 0), (0, 1, 0), (0, 0, 1), (42, 3, 7))]
  assert seeds == [6375474603054492659, 8514611595135926838, 8227443068371210697,
                   1148591787326761304]


def test_train_seeds_are_the_epoch_and_index_and_resume_exactly(demo_shapes_dir):
  config = _config(demo_shapes_dir)
  batches = stream.train_batches(config, 0, 0, 1, transform=_seed_of)
  fresh = [next(batches) for _ in range(7)]
  seeds = np.concatenate([b['seed'] for b in fresh])
  np.testing.assert_array_equal(seeds[:, 1], np.r_[np.arange(40), np.arange(16)])
  assert (seeds[:40, 0] == stream._epoch_seed(config.seed, 0, 0)).all()
  assert (seeds[40:, 0] == stream._epoch_seed(config.seed, 0, 1)).all()
  for start in (3, 6):
    resumed = next(stream.train_batches(config, start, 0, 1, transform=_seed_of))
    for key in fresh[start]:
      np.testing.assert_array_equal(resumed[key], fresh[start][key])


def test_examples_of_one_record_stay_adjacent(demo_shapes_dir):
  config = _config(demo_shapes_dir)
  batch = next(stream.train_batches(config, 0, 0, 1, transform=_two_copies, per_record=2))
  np.testing.assert_array_equal(batch['copy'], [0, 1] * 4)
  np.testing.assert_array_equal(batch['label'][0::2], batch['label'][1::2])
  with pytest.raises(ValueError, match='not a multiple of the 3 examples'):
    stream.train_batches(config, 0, 0, 1, transform=_two_copies, per_record=3)


def test_eval_stream_pads_every_process_alike_with_masked_zeros(demo_shapes_dir):
  # 11 records over 2 processes (6 + 5) in local batches of 4: 2 batches each.
  config = _config(demo_shapes_dir, eval_split='validation[:11]', eval_batch_size=8)
  transform = lambda record: {'label': record['label'], 'one': tf.ones([2])}
  per_process = [list(stream.eval_batches(config, index, 2, transform=transform))
                 for index in range(2)]
  assert [len(batches) for batches in per_process] == [2, 2]
  batches = [b for batches in per_process for b in batches]
  masks = np.concatenate([b['mask'] for b in batches])
  ones = np.concatenate([b['one'] for b in batches])
  assert masks.sum() == 11 and (ones[masks] == 1).all() and not ones[~masks].any()


def _ids(config, split):
  builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  ds = builder.as_dataset(split=split, read_config=tfds.ReadConfig(add_tfds_id=True))
  return [ex['tfds_id'].numpy() for ex in ds]


def test_processes_read_disjoint_slices(demo_shapes_dir):
  config = _config(demo_shapes_dir)
  everything = set(_ids(config, 'validation[:101]'))
  for drop_remainder in (False, True):
    slices = [_ids(config, stream._process_split(
        'validation[:101]', index, 3, drop_remainder=drop_remainder)) for index in range(3)]
    sets = [set(s) for s in slices]
    assert sum(len(s) for s in sets) == sum(len(s) for s in slices)  # No duplicates.
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    union = sets[0] | sets[1] | sets[2]
    if drop_remainder:  # Equal slices, so all processes have equal epochs.
      assert [len(s) for s in slices] == [33, 33, 33] and union <= everything
    else:
      assert union == everything
