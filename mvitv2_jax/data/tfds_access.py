"""TFDS dataset access: the builder, records read still encoded, example counts.

The demo datasets build themselves on first use; reading any other dataset that is
not prepared raises `DatasetNotPreparedError` with the steps that prepare it.
Importing this module registers the package's TFDS builders.
"""

import os

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from mvitv2_jax.data import demo_dataset
from mvitv2_jax.data import prepare
from mvitv2_jax.data import video_demo
from mvitv2_jax.data import video_folder

# Procedural and download-free: nothing for the user to prepare.
_SELF_BUILDING_DATASETS = (demo_dataset.MViTv2DemoShapes.name,
                           video_demo.MViTv2DemoMotion.name)


class DatasetNotPreparedError(RuntimeError):
  """The TFDS dataset has not been downloaded and prepared."""


def dataset_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder of `config.dataset` in `config.data_dir`, a demo dataset built if needed."""
  builder = tfds.builder(config.dataset, data_dir=config.data_dir or None)
  if builder.name in _SELF_BUILDING_DATASETS and not builder.is_prepared():
    builder.download_and_prepare()
  return builder


def prepare_instructions(builder: tfds.core.DatasetBuilder) -> str:
  """How to prepare the builder's dataset in its data dir: one line."""
  root = os.fspath(builder.data_dir_root)
  if builder.name == 'imagenet2012':
    manual_dir = os.path.join(root, 'downloads', 'manual')
    return (
        f'Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from '
        f'https://image-net.org/download-images (registration needed) into '
        f'{manual_dir}/, then run: {prepare.command("imagenet2012", root)}')
  if builder.name == video_folder.MViTv2VideoFrames.name:
    return video_folder.prepare_instructions(builder.builder_config.name, root)
  name = builder.name
  if builder.builder_config is not None:
    name = f'{name}/{builder.builder_config.name}'
  return f'Prepare it with: {prepare.command(name, root)}'


def read(builder: tfds.core.DatasetBuilder, split, *, encoded_key: str = 'image',
         shuffle_seed=None, options: tf.data.Options | None = None,
         add_tfds_id: bool = False) -> tf.data.Dataset:
  """Records with `encoded_key` left encoded (e.g. image bytes), in a fixed order per seed.

  Args:
    builder: the dataset's builder.
    split: a TFDS split (string or `tfds.split_for_jax_process`'s).
    encoded_key: the feature read undecoded.
    shuffle_seed: the file order's seed; None reads the files in order.
    options: tf.data options of the read.
    add_tfds_id: add each record's TFDS id as `tfds_id` (to name it in messages).

  Returns:
    The records of `split`.

  Raises:
    DatasetNotPreparedError: the dataset is not prepared; says how to do it.
  """
  read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, options=options,
                                add_tfds_id=add_tfds_id)
  try:
    return builder.as_dataset(
        split=split, shuffle_files=shuffle_seed is not None,
        decoders={encoded_key: tfds.decode.SkipDecoding()}, read_config=read_config)
  except AssertionError as e:  # What TFDS raises when the data is missing.
    raise DatasetNotPreparedError(
        f'Dataset {builder.name!r} is not prepared in {builder.data_dir_root}. '
        f'{prepare_instructions(builder)}') from e


def num_examples(config: ml_collections.ConfigDict, split: str) -> int:
  """Number of records of `split`, over all processes.

  Args:
    config: the experiment config (dataset, data_dir and the fallbacks).
    split: a TFDS split string, slices allowed (e.g. 'train[:1000]').

  Returns:
    The count from TFDS metadata, else `config.num_train_examples` for
    `config.train_split` or `config.num_eval_examples` for `config.eval_split`.

  Raises:
    ValueError: when neither the metadata nor the config knows the count.
  """
  builder = dataset_builder(config)
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError):  # No metadata, e.g. under tfds.testing.mock_data.
    pass
  fallback = {config.train_split: config.num_train_examples,
              config.eval_split: config.num_eval_examples}.get(split, -1)
  if fallback > 0:
    return fallback
  hint = '' if builder.is_prepared() else ' ' + prepare_instructions(builder)
  raise ValueError(
      f'Number of examples of {config.dataset}:{split} is unknown: TFDS has no '
      f'metadata for it and config.num_train_examples / num_eval_examples is '
      f'not set.{hint}')
