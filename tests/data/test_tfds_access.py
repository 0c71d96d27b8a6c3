"""Tests for mvitv2_jax.data.tfds_access: counts, self-building demos, preparation help."""

import os

import pytest
import tensorflow_datasets as tfds

from mvitv2_jax.data import tfds_access
from tests.helpers import training

_config = training.demo_shapes_config


def _read_train(config):
  return tfds_access.read(tfds_access.dataset_builder(config), config.train_split)


def test_num_examples(demo_shapes_dir):
  config = _config(demo_shapes_dir)
  assert tfds_access.num_examples(config, 'train') == 10_000
  assert tfds_access.num_examples(config, 'validation[:101]') == 101


def test_num_examples_falls_back_to_config_without_metadata():
  config = _config('', dataset='imagenet2012')
  with tfds.testing.mock_data(num_examples=8):
    with pytest.raises(ValueError, match='num_train_examples'):
      tfds_access.num_examples(config, 'train')
    config.num_train_examples = 8
    config.num_eval_examples = 5
    assert tfds_access.num_examples(config, 'train') == 8
    assert tfds_access.num_examples(config, 'validation') == 5


def test_demo_datasets_build_themselves(tmp_path):
  config = _config(str(tmp_path), dataset='mvitv2_demo_motion/tiny')
  assert tfds_access.dataset_builder(config).is_prepared()
  assert tfds_access.num_examples(config, 'validation') == 21


def test_missing_imagenet_says_how_to_prepare_it(tmp_path):
  config = _config(str(tmp_path), dataset='imagenet2012')
  with pytest.raises(tfds_access.DatasetNotPreparedError) as error:
    _read_train(config)
  message = str(error.value)
  assert 'ILSVRC2012_img_train.tar' in message and 'ILSVRC2012_img_val.tar' in message
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in message
  assert f'python -m mvitv2_jax.data.prepare imagenet2012 --data_dir={tmp_path}' in message


def test_missing_other_dataset_says_the_prepare_command(tmp_path):
  config = _config(str(tmp_path), dataset='mnist')
  with pytest.raises(tfds_access.DatasetNotPreparedError, match='python -m mvitv2_jax.data.prepare mnist'):
    _read_train(config)
