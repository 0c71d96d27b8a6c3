"""Small TFDS datasets with records that do not decode, planted past the build checks.

`mvitv2_planted_shapes`: 200 train and 50 validation images of the demo shapes at 64x64,
train images 37 (truncated JPEG) and 150 (empty) bad: 1 % of the train split; validation
image 3 truncated. `mvitv2_planted_motion`: the `tiny` demo videos (40 train, 21
validation), train video 5 with a truncated frame and video 17 with every other frame of
another size, validation video 20 (the last) with a truncated last frame. Importing this module
registers both builders (tests only).
"""

import numpy as np
import tensorflow_datasets as tfds

from mvitv2_jax.data import demo_dataset
from mvitv2_jax.data import jpeg
from mvitv2_jax.data import video_demo

BAD_TRAIN_IMAGES = {37: 'truncated', 150: 'empty'}
BAD_EVAL_IMAGES = {3: 'truncated'}
BAD_TRAIN_VIDEOS = {5: 'truncated', 17: 'mixed_size'}
BAD_EVAL_VIDEOS = {20: 'truncated_last'}


def _break(encoded: bytes, how: str) -> bytes:
  return b'' if how == 'empty' else encoded[:len(encoded) // 2]


def record_name(split: str, index: int) -> str:
  """The name each record carries (`file_name`), as the stream logs it."""
  return f'{split}_{index:04d}'


class MViTv2PlantedShapes(tfds.core.GeneratorBasedBuilder):
  """The demo shapes with broken JPEGs planted; the key `file_name` names each record."""

  name = 'mvitv2_planted_shapes'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Tests.'}

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(64, 64, 3), encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(names=demo_dataset.CLASS_NAMES),
        'file_name': tfds.features.Text(),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples('train', 200, BAD_TRAIN_IMAGES),
            'validation': self._generate_examples('validation', 50, BAD_EVAL_IMAGES)}

  def _generate_examples(self, split, count, bad):
    rng = np.random.default_rng(len(split))
    for index in range(count):
      label = index % len(demo_dataset.CLASS_NAMES)
      encoded = jpeg.encode(demo_dataset.make_example(label, rng))
      if index in bad:
        encoded = _break(encoded, bad[index])
      yield index, {'image': encoded, 'label': label,
                    'file_name': record_name(split, index)}


class MViTv2PlantedMotion(tfds.core.GeneratorBasedBuilder):
  """The tiny demo videos with broken frames planted; `video_id` names each record."""

  name = 'mvitv2_planted_motion'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Tests.'}

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'video': tfds.features.Video(shape=(None, None, None, 3), encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(names=video_demo.CLASS_NAMES),
        'video_id': tfds.features.Text(),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples('train', 40, BAD_TRAIN_VIDEOS),
            'validation': self._generate_examples('validation', 21, BAD_EVAL_VIDEOS)}

  def _generate_examples(self, split, count, bad):
    rng = np.random.default_rng(len(split))
    for index in range(count):
      label = index % len(video_demo.CLASS_NAMES)
      frames = [jpeg.encode(f) for f in video_demo.make_video(label, rng)]
      how = bad.get(index)
      if how == 'truncated':
        frames = [_break(f, how) for f in frames]  # Every frame: any clip hits one.
      elif how == 'truncated_last':
        frames[-1] = _break(frames[-1], 'truncated')
      elif how == 'mixed_size':  # Every other frame: any clip of two or more mixes sizes.
        frames[1::2] = [jpeg.encode(np.zeros((40, 48, 3), np.uint8))] * len(frames[1::2])
      yield index, {'video': frames, 'label': label, 'video_id': record_name(split, index)}
