"""Records that fail to decode at train and eval time: replaced or masked, named, resumable."""

import logging

import numpy as np
import pytest

from mvitv2_jax.data import images
from mvitv2_jax.data import unreadable
from mvitv2_jax.data import video
from tests.helpers import planted_data
from tests.helpers import training


@pytest.fixture(scope='module')
def planted_dir(tmp_path_factory):
  """A data_dir with both planted datasets prepared."""
  data_dir = training.prepared_tfds(planted_data.MViTv2PlantedShapes.name, tmp_path_factory)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.builder(planted_data.MViTv2PlantedMotion.name, data_dir=data_dir).download_and_prepare()
  return data_dir


def _image_config(data_dir, **overrides):
  return training.demo_shapes_config(data_dir, dataset=planted_data.MViTv2PlantedShapes.name,
                                     shuffle_buffer=200, **overrides)


def _video_config(data_dir, **overrides):
  return training.tiny_video_config(dataset=planted_data.MViTv2PlantedMotion.name,
                                    data_dir=data_dir, batch_size=8, eval_batch_size=6,
                                    shuffle_buffer=64, **overrides)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def _planted_names(bad, split='train'):
  return {planted_data.record_name(split, i) for i in bad}


def test_train_images_skip_bad_records_and_resume_exactly(planted_dir, caplog):
  config = _image_config(planted_dir)  # 25 batches of 8 per epoch: two epochs.
  with caplog.at_level(logging.WARNING, logger='mvitv2_jax.data.unreadable'):
    full = _take(images.create_train_iterator(config), 50)
  named = ' '.join(r.getMessage() for r in caplog.records)
  assert all(name in named for name in _planted_names(planted_data.BAD_TRAIN_IMAGES))
  # Each bad record is met once per epoch, in the same place of each epoch's order.
  assert named.count('Skipped') == 4
  for batch in full:
    assert batch['image'].shape == (8, 32, 32, 3) and set(batch) == {'image', 'label'}
    # A failed example is a copy of another, never zeros.
    assert (np.abs(batch['image']).reshape(8, -1).max(axis=1) > 0).all()
  for start in (3, 24, 31):
    _equal(_take(images.create_train_iterator(config, start_step=start), 50 - start - 10),
           full[start:40])


def test_eval_images_mask_and_count_bad_records(planted_dir, caplog):
  config = _image_config(planted_dir, eval_batch_size=16)
  it = images.create_eval_iterator(config)
  with caplog.at_level(logging.WARNING, logger='mvitv2_jax.data.unreadable'):
    batches = list(it)
  assert len(batches) == 4 and set(batches[0]) == {'image', 'label', 'mask'}
  assert sum(int(b['mask'].sum()) for b in batches) == 49
  assert it.unreadable == 1
  assert planted_data.record_name('validation', 3) in caplog.text
  assert not batches[0]['mask'][3]  # In order: the unreadable example's own place.


def test_video_skips_bad_records_and_resumes_exactly(planted_dir, caplog):
  config = _video_config(planted_dir)  # 4 videos (8 clips) a batch: 10 per epoch.
  with caplog.at_level(logging.WARNING, logger='mvitv2_jax.data.unreadable'):
    full = _take(video.create_train_iterator(config), 20)
  assert all(name in caplog.text for name in _planted_names(planted_data.BAD_TRAIN_VIDEOS))
  _equal(_take(video.create_train_iterator(config, start_step=13), 7), full[13:])
  it = video.create_eval_iterator(config)
  batches = list(it)
  assert it.unreadable == 1
  assert sum(int(b['mask'].sum()) for b in batches) == 20


def test_fill_uses_the_next_good_example_of_the_batch():
  def batch(ok):
    return {'image': np.arange(5.0), 'label': np.arange(5), unreadable.OK_KEY: np.array(ok),
            unreadable.ID_KEY: np.array([b'a', b'b', b'c', b'd', b'e'])}

  (out,) = unreadable.fill_train_batches([batch([1, 0, 1, 1, 0])], lambda k: f'batch {k}')
  np.testing.assert_array_equal(out['image'], [0, 2, 2, 3, 0])
  with pytest.raises(unreadable.UnreadableBatchError, match='a, b'):
    next(unreadable.fill_train_batches([batch([0] * 5)], lambda k: f'batch {k}'))
