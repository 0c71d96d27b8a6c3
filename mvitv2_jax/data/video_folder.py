"""`mvitv2_video_frames`: a TFDS builder over folders of frames, for data TFDS lacks.

Kinetics-400/600/700 and Something-Something v2 are not in TFDS; users build them from
their own copies. Extract each video's frames (see README "Training on video") into

  <data_dir>/downloads/manual/<config>/<split>/<class>/<video_id>/<frame>.jpg

with <split> in {train, validation} (frames .jpg, .jpeg or .png, numbered), then run
`python -m mvitv2_jax.data.prepare mvitv2_video_frames/<config> --data_dir=<data_dir>`.
Labels are the class folder names in sorted order (those of the train split), names
compared in Unicode NFC. Each example holds the video's frames as they are (no
re-encoding) in the order of their numbers, its label and its id. Every frame is
decoded once while building (`frames_check`): videos that cannot be trained on are
skipped, stray entries ignored, each named in a warning and in `build_report.txt`
beside the dataset (`build_report`). Importing this module registers the builder.
"""

import dataclasses
import difflib
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from mvitv2_jax.data import build_report
from mvitv2_jax.data import frames_check

SPLITS = ('train', 'validation')
_EXPECTED = '<split>/<class>/<video_id>/<frames>'


class LayoutError(ValueError):
  """The manual dir's folders are not the documented layout; the message names them."""


@dataclasses.dataclass
class FramesConfig(tfds.core.BuilderConfig):
  num_classes: int = 400


def prepare_command(config_name: str, data_root: str) -> str:
  """The command that builds `mvitv2_video_frames/<config_name>` in `data_root`."""
  return (f'python -m mvitv2_jax.data.prepare mvitv2_video_frames/{config_name} '
          f'--data_dir={data_root}')


def prepare_instructions(config_name: str, data_root: str) -> str:
  """How to prepare `mvitv2_video_frames/<config_name>` under `data_root`: one line."""
  manual = os.path.join(data_root, 'downloads', 'manual', config_name)
  return (f'Extract every video to JPEG frames (30 fps, short side 320: ffmpeg -i VIDEO '
          f'-r 30 -vf scale=-2:320 -q:v 2 %06d.jpg) as {manual}/<train|validation>/'
          f'<class>/<video_id>/*.jpg, then run: {prepare_command(config_name, data_root)} '
          f'(see README "Training on video").')


def _class_folders(split_dir: str, report: build_report.BuildReport) -> dict[str, str]:
  """{NFC name: folder name} of a split's class folders; stray entries reported."""
  if not tf.io.gfile.isdir(split_dir):
    raise LayoutError(f'{split_dir} is missing: expected {_EXPECTED} under '
                      f'{os.path.dirname(split_dir)}')
  folders, strays = frames_check.split_entries(split_dir)
  for name, reason in strays:
    report.ignore(os.path.join(split_dir, name), reason)
  classes = {}
  for name in folders:
    key = frames_check.nfc(name)
    if key in classes:
      raise LayoutError(f'{split_dir} holds {classes[key]!r} and {name!r}: one class name '
                        'written in two Unicode forms (NFC and NFD); merge them')
    classes[key] = name
  return classes


class MViTv2VideoFrames(tfds.core.GeneratorBasedBuilder):
  """Videos as frame sequences from `<manual_dir>/<split>/<class>/<video_id>/`."""

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

  def __init__(self, *, max_bad_fraction: float = build_report.DEFAULT_MAX_BAD_FRACTION,
               **kwargs):
    """As any builder, plus the share of bad videos per split that stops the build."""
    self._max_bad_fraction = max_bad_fraction
    super().__init__(**kwargs)

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

  def report_path(self) -> str:
    """Where the build report goes: beside the dataset's version folders."""
    return os.path.join(os.fspath(self.data_dir_root), self.name, self.builder_config.name,
                        build_report.REPORT_NAME)

  def _split_generators(self, dl_manager):
    # The config's own folder when the manual dir holds several datasets.
    root = os.path.join(dl_manager.manual_dir, self.builder_config.name)
    if not tf.io.gfile.isdir(root):
      root = os.fspath(dl_manager.manual_dir)
    report = build_report.BuildReport(self.report_path(), self._max_bad_fraction)
    self.build_report = report
    folders = {split: _class_folders(os.path.join(root, split), report) for split in SPLITS}
    classes = sorted(folders['train'])
    expected = self.builder_config.num_classes
    if len(classes) != expected:
      report.note(f'class folders of {root}/train: {classes}')
      raise LayoutError(
          f'{root}/train has {len(classes)} class folders; {self.builder_config.name} has '
          f'{expected}. {self._suspects(root, folders["train"])}All {len(classes)} names '
          f'are listed in {report.path}')
    unknown = sorted(set(folders['validation']) - set(classes))
    if unknown:
      named = '; '.join(
          f'{name!r}' + ''.join(f' (train has {c!r})'
                                for c in difflib.get_close_matches(name, classes, 1))
          for name in unknown[:5])
      raise LayoutError(f'{root}/validation has {len(unknown)} class folders that train '
                        f'lacks: {named}')
    labels = {name: i for i, name in enumerate(classes)}
    return {split: self._generate_examples(split, os.path.join(root, split), folders[split],
                                           labels, report)
            for split in SPLITS}

  @staticmethod
  def _suspects(root: str, folders: dict[str, str]) -> str:
    """The class folders that hold no video folder: the likely strays, as a sentence."""
    empty = [name for name, folder in sorted(folders.items())
             if not frames_check.split_entries(os.path.join(root, 'train', folder))[0]]
    return f'Folders without videos: {empty[:10]}. ' if empty else ''

  def _generate_examples(self, split, split_dir, folders, labels, report):
    for name, folder in sorted(folders.items()):
      class_dir = os.path.join(split_dir, folder)
      videos, strays = frames_check.split_entries(class_dir)
      for stray, reason in strays:
        report.ignore(os.path.join(class_dir, stray), reason)
      seen = {}
      for video in videos:
        video_dir = os.path.join(class_dir, video)
        video_id = frames_check.nfc(video)
        if video_id in seen:
          report.skip(split, video_dir, f'the same id as {seen[video_id]!r} once both are '
                      'in Unicode NFC')
          continue
        seen[video_id] = video
        try:
          encoded, strays = frames_check.read_video(video_dir)
        except frames_check.BadItem as e:
          report.skip(split, video_dir, str(e))
          continue
        for stray, reason in strays:
          report.ignore(os.path.join(video_dir, stray), reason)
        report.keep(split)
        yield f'{name}/{video_id}', {'video': encoded, 'label': labels[name],
                                     'video_id': video_id}
    report.finish_split(split)
