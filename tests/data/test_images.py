"""Tests for mvitv2_jax.data.images on the demo dataset and a fake ImageNet."""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mvitv2_jax.data import imagenet
from mvitv2_jax.data import images
from mvitv2_jax.data import tfds_access
from tests.helpers import fake_imagenet
from tests.helpers import training

_config = training.demo_shapes_config


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _labels_in(config, split):
  ds = tfds.builder(config.dataset, data_dir=config.data_dir).as_dataset(split=split)
  return collections.Counter(int(ex['label']) for ex in ds)


@pytest.mark.parametrize('height,width', [(18, 25), (64, 64), (224, 101), (300, 200), (150, 400)])
def test_train_resize_matches_antialiased_bicubic(height, width):
  rng = np.random.default_rng(height)
  crop = rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8)
  out = images._resize_crop_uint8(crop, 224).numpy().astype(int)
  expected = imagenet.resize_uint8(crop, 224, 224).numpy().astype(int)
  diff = np.abs(out - expected)
  if height <= 224 and width <= 224:  # Plain bicubic: the same up to float rounding.
    assert diff.max() <= 1 and (diff == 0).mean() > 0.95
  else:
    assert not diff.any()


def test_train_batch_shapes_dtypes_and_ranges(demo_shapes_dir):
  config = _config(demo_shapes_dir)
  config.aug.random_erase_prob = 0.0  # Erased pixels are N(0, 1), unbounded.
  batch = next(images.create_train_iterator(config))
  assert batch['image'].shape == (8, 32, 32, 3) and batch['image'].dtype == np.float32
  assert batch['label'].shape == (8,) and batch['label'].dtype == np.int32
  assert -2.2 < batch['image'].min() and batch['image'].max() < 2.7
  assert batch['image'].std() > 0.3  # Not blank.
  assert ((batch['label'] >= 0) & (batch['label'] < 10)).all()


def test_train_is_deterministic_and_resumes_exactly(demo_shapes_dir):
  # 40 examples / batch 8: 5 steps per epoch, so step 6 lies in epoch 1.
  config = _config(demo_shapes_dir, train_split='train[:40]')
  fresh = _take(images.create_train_iterator(config), 7)
  again = _take(images.create_train_iterator(config), 7)
  for a, b in zip(fresh, again):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  # An epoch is a permutation, and the next epoch is shuffled differently.
  epoch0 = np.concatenate([b['label'] for b in fresh[:5]])
  assert collections.Counter(epoch0.tolist()) == _labels_in(config, 'train[:40]')
  assert not np.array_equal(fresh[5]['image'], fresh[0]['image'])
  for start in (3, 6):
    resumed = next(images.create_train_iterator(config, start_step=start))
    np.testing.assert_array_equal(resumed['image'], fresh[start]['image'])
    np.testing.assert_array_equal(resumed['label'], fresh[start]['label'])


def test_other_seed_gives_other_batches(demo_shapes_dir):
  config = _config(demo_shapes_dir, train_split='train[:40]')
  a = next(images.create_train_iterator(config))
  config.seed = 1
  b = next(images.create_train_iterator(config))
  assert not np.array_equal(a['image'], b['image'])


def test_simulated_processes_get_local_batches(demo_shapes_dir):
  config = _config(demo_shapes_dir, train_split='train[:40]')
  batches = [next(images._train_batches(config, 0, index, 2)) for index in range(2)]
  assert all(b['image'].shape == (4, 32, 32, 3) for b in batches)
  assert not np.array_equal(batches[0]['image'], batches[1]['image'])


@pytest.mark.parametrize('process_count', [1, 3])
def test_eval_counts_every_example_once(demo_shapes_dir, process_count):
  # 101 examples: uneven process slices (34, 34, 33) and uneven last batches.
  config = _config(demo_shapes_dir, eval_split='validation[:101]', eval_batch_size=24)
  per_process = [list(images._eval_batches(config, index, process_count))
                 for index in range(process_count)]
  assert len({len(batches) for batches in per_process}) == 1  # Same count everywhere.
  batches = [b for batches in per_process for b in batches]
  local = 24 // process_count
  for b in batches:
    assert b['image'].shape == (local, 32, 32, 3) and b['image'].dtype == np.float32
    assert b['label'].dtype == np.int32 and b['mask'].dtype == np.bool_
    assert not b['image'][~b['mask']].any()
  masks = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert masks.sum() == 101 and not masks.all()
  assert collections.Counter(labels[masks].tolist()) == _labels_in(config, 'validation[:101]')
  # Callable again, with the same result.
  again = list(images._eval_batches(config, 0, process_count))
  np.testing.assert_array_equal(again[0]['image'], per_process[0][0]['image'])


def test_eval_images_are_normalised(demo_shapes_dir):
  batch = next(images.create_eval_iterator(_config(demo_shapes_dir, eval_split='validation[:16]')))
  assert batch['mask'].all()
  assert -2.2 < batch['image'].min() and batch['image'].max() < 2.7


def test_num_examples_are_the_images(demo_shapes_dir):
  config = _config(demo_shapes_dir)
  assert images.num_examples(config, 'train') == 10_000
  assert images.num_examples(config, 'validation[:101]') == 101


def test_missing_dataset_stops_both_iterators(tmp_path):
  config = _config(str(tmp_path), dataset='imagenet2012')
  with pytest.raises(tfds_access.DatasetNotPreparedError, match='ILSVRC2012_img_train.tar'):
    images.create_train_iterator(config)
  with pytest.raises(tfds_access.DatasetNotPreparedError, match='python -m mvitv2_jax.data.prepare imagenet2012'):
    images.create_eval_iterator(config)


def test_fake_imagenet_in_real_tfds_format(tmp_path):
  data_dir = str(tmp_path)
  fake_imagenet.make_fake_imagenet(data_dir, num_train_per_class=4, num_validation=5)
  config = _config(data_dir, dataset='imagenet2012', batch_size=4, eval_batch_size=4)
  batch = next(images.create_train_iterator(config))
  assert batch['image'].shape == (4, 32, 32, 3) and batch['label'].dtype == np.int32
  names = tfds.builder('imagenet2012', data_dir=data_dir).info.features['label'].names
  train_labels = {names.index(synset) for synset in fake_imagenet.DEFAULT_CLASSES}
  assert set(batch['label'].tolist()) <= train_labels
  batches = list(images.create_eval_iterator(config))
  assert len(batches) == 2
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.sum() == 5
  assert images.num_examples(config, 'validation') == 5
