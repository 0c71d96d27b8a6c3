"""`mvitv2_video_frames`: a TFDS builder over folders of JPEG frames, for data TFDS lacks.

Kinetics-400/600/700 and Something-Something v2 are not in TFDS; users build them from
their own copies. Extract each video's frames (see README "Training on video") into

  <data_dir>/downloads/manual/<config>/<split>/<class>/<video_id>/<frame>.jpg

with <split> in {train, validation}, then `tfds build mvitv2_jax/data/video_folder.py
--config=<config> --data_dir=<data_dir> --manual_dir=...`, or from Python
`tfds.builder('mvitv2_video_frames/<config>', data_dir=...).download_and_prepare()`.
Labels are the class folder names in sorted order (those of the train split). Each
example holds the video's JPEG frames as they are (no re-encoding; frames sorted by
file name), its label and its id. Importing this module registers the builder.
"""

import dataclasses
import os

import tensorflow as tf
import tensorflow_datasets as tfds

SPLITS = ('train', 'validation')


@dataclasses.dataclass
class FramesConfig(tfds.core.BuilderConfig):
  num_classes: int = 400


def prepare_instructions(config_name: str, data_root: str) -> str:
  """How to prepare `mvitv2_video_frames/<config_name>` under `data_root`: one line."""
  manual = os.path.join(data_root, 'downloads', 'manual', config_name)
  return (f'Extract every video to JPEG frames (30 fps, short side 320: ffmpeg -i VIDEO '
          f'-r 30 -vf scale=-2:320 -q:v 2 %06d.jpg) as {manual}/<train|validation>/'
          f'<class>/<video_id>/*.jpg, then run: tfds build mvitv2_jax/data/video_folder.py '
          f'--config={config_name} --data_dir={data_root} (see README "Training on video").')


class MViTv2VideoFrames(tfds.core.GeneratorBasedBuilder):
  """Videos as JPEG frame sequences from `<manual_dir>/<split>/<class>/<video_id>/`."""

  name = 'mvitv2_video_frames'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Place the frames as <manual_dir>/<split>/<class>/<video_id>/<frame>.jpg, '
      'split in {train, validation}.')
  BUILDER_CONFIGS = [
      FramesConfig(name='kinetics400', num_classes=400),
      FramesConfig(name='kinetics600', num_classes=600),
      FramesConfig(name='kinetics700', num_classes=700),
      FramesConfig(name='ssv2', num_classes=174),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Video(shape=(None, None, None, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(num_classes=self.builder_config.num_classes),
            'video_id': tfds.features.Text(),
        }),
        supervised_keys=('video', 'label'),
    )

  def _split_generators(self, dl_manager):
    # The config's own folder when the manual dir holds several datasets.
    root = os.path.join(dl_manager.manual_dir, self.builder_config.name)
    if not tf.io.gfile.isdir(root):
      root = os.fspath(dl_manager.manual_dir)
    classes = sorted(tf.io.gfile.listdir(os.path.join(root, 'train')))
    classes = [c.rstrip('/') for c in classes]
    if len(classes) != self.builder_config.num_classes:
      raise ValueError(f'{root}/train has {len(classes)} class folders; '
                       f'{self.builder_config.name} has {self.builder_config.num_classes}.')
    return {split: self._generate_examples(os.path.join(root, split), classes)
            for split in SPLITS}

  def _generate_examples(self, split_dir, classes):
    labels = {name: i for i, name in enumerate(classes)}
    for name in sorted(tf.io.gfile.listdir(split_dir)):
      name = name.rstrip('/')
      if name not in labels:
        raise ValueError(f'{split_dir}/{name} is not a class of the train split.')
      class_dir = os.path.join(split_dir, name)
      for video_id in sorted(tf.io.gfile.listdir(class_dir)):
        video_id = video_id.rstrip('/')
        video_dir = os.path.join(class_dir, video_id)
        frames = sorted(f for f in tf.io.gfile.listdir(video_dir)
                        if f.lower().endswith(('.jpg', '.jpeg')))
        if not frames:
          raise ValueError(f'{video_dir} holds no .jpg frames.')
        encoded = []
        for frame in frames:
          with tf.io.gfile.GFile(os.path.join(video_dir, frame), 'rb') as f:
            encoded.append(f.read())
        yield f'{name}/{video_id}', {'video': encoded, 'label': labels[name],
                                     'video_id': video_id}
