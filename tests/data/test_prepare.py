"""The preparation command on tiny datasets in the documented layouts, messy ones included."""

import os
import subprocess
import sys
import unicodedata

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from mvitv2_jax.data import build_report
from mvitv2_jax.data import prepare
from mvitv2_jax.data import video_folder
from tests.helpers import fake_imagenet
from tests.helpers import training

_TWO = video_folder.FramesConfig(name='two', num_classes=2)


def _run(*args):
  """`python -m mvitv2_jax.data.prepare ARGS` from the repository: (status, stderr)."""
  result = subprocess.run([sys.executable, '-m', 'mvitv2_jax.data.prepare', *args],
                          capture_output=True, text=True, cwd=training.REPO_ROOT,
                          env=training.subprocess_env(), timeout=600, check=False)
  return result.returncode, result.stderr


def _frames(folder, count, *, size=(12, 16), names='{:06d}.jpg', seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  for t in range(1, count + 1):
    pixels = np.full((*size, 3), 10 * t, np.uint8) + rng.integers(0, 5, (*size, 3), np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, names.format(t)))


def _layout(manual, classes, per_class=(2, 1), frames=3):
  for split, count in zip(video_folder.SPLITS, per_class):
    for name in classes:
      for k in range(count):
        _frames(os.path.join(manual, split, name, f'{name}_{k}'), frames, seed=k)


def _build(tmp_path, manual, **kwargs):
  builder = tfds.builder('mvitv2_video_frames', config=_TWO,
                         data_dir=str(tmp_path / 'tfds'), **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder


def _report(builder):
  with open(builder.report_path(), encoding='utf-8') as f:
    return f.read()


@pytest.mark.slow
def test_readme_command_builds_kinetics_frames(tmp_path):
  manual = tmp_path / 'tfds' / 'downloads' / 'manual' / 'kinetics400'
  _layout(manual, [f'class_{i:03d}' for i in range(400)], per_class=(1, 1), frames=2)
  empty = manual / 'train' / 'class_001' / 'v_empty'
  empty.mkdir()
  (manual / 'train' / '.DS_Store').write_bytes(b'\0\0\0\1Bud1')
  status, err = _run('mvitv2_video_frames/kinetics400', f'--data_dir={tmp_path / "tfds"}')
  assert status == 0, err
  assert f'Skipped {empty}: holds no frames' in err
  assert '1 skipped, 1 stray entries ignored' in err
  builder = tfds.builder('mvitv2_video_frames/kinetics400', data_dir=str(tmp_path / 'tfds'))
  assert builder.info.splits['train'].num_examples == 400
  status, err = _run('mvitv2_video_frames/kinetics400', f'--data_dir={tmp_path / "tfds"}')
  assert status == 0 and 'already prepared' in err


@pytest.mark.slow
def test_readme_command_builds_imagenet_from_its_tars_leaving_out_bad_images(tmp_path):
  data_dir = tmp_path / 'tfds'
  good = fake_imagenet._jpeg(np.random.default_rng(1), (40, 30))  # pylint: disable=protected-access
  bad = {'n01443537_2.JPEG': good[:len(good) // 2], 'ILSVRC2012_val_00000004.JPEG': b''}
  fake_imagenet.write_archives(str(data_dir / 'downloads' / 'manual'), replace=bad,
                               num_train_per_class=30, num_validation=5)
  # One of 5 validation images: over the default limit.
  status, err = _run('imagenet2012', f'--data_dir={data_dir}', '--max_bad_fraction=0.25')
  assert status == 0, err
  builder = tfds.builder('imagenet2012', data_dir=str(data_dir))
  assert builder.info.splits['train'].num_examples == 89
  assert builder.info.splits['validation'].num_examples == 4
  report = open(data_dir / 'imagenet2012' / build_report.REPORT_NAME).read()
  assert 'n01443537_2.JPEG\tthe JPEG data is truncated or corrupt' in report
  assert 'ILSVRC2012_val_00000004.JPEG\tthe file is empty (0 bytes)' in report


def test_imagenet_over_the_bad_limit_stops_naming_the_worst_class(tmp_path):
  data_dir = tmp_path / 'tfds'
  bad = {f'n01443537_{i}.JPEG': b'' for i in range(2)}
  fake_imagenet.write_archives(str(data_dir / 'downloads' / 'manual'), replace=bad)
  status, err = _run('imagenet2012', f'--data_dir={data_dir}')
  assert status == 1
  assert err.strip().splitlines()[-1].startswith(
      'error: 2 of the 12 items of train (16.7%) could not be used, more than '
      'max_bad_fraction=0.05; most in ILSVRC2012_img_train.tar:n01443537 (2)')
  assert not tfds.builder('imagenet2012', data_dir=str(data_dir)).is_prepared()
  status, err = _run('imagenet2012', f'--data_dir={data_dir}', '--max_bad_fraction=0.2')
  assert status == 0, err


def test_frames_are_checked_ordered_and_named(tmp_path):
  manual = tmp_path / 'manual'
  _layout(manual, ['abseiling', 'bowling'])
  train = manual / 'train'
  _frames(train / 'bowling' / 'numbered', 12, names='{}.png')  # 1.png ... 12.png
  (train / 'bowling' / 'numbered' / '.DS_Store').write_bytes(b'x')
  (train / 'bowling' / 'numbered' / '._1.png').write_bytes(b'x')
  (train / 'bowling' / 'leftover.mp4').write_bytes(b'\0\0\0\x18ftypmp42')
  (train / 'bowling' / 'empty_video').mkdir()
  (train / 'bowling' / 'bowling_0').rename(train / 'bowling' / 'zero_byte')
  (train / 'bowling' / 'zero_byte' / '000002.jpg').write_bytes(b'')
  _frames(train / 'abseiling' / 'truncated', 3)
  frame = (train / 'abseiling' / 'truncated' / '000003.jpg')
  frame.write_bytes(frame.read_bytes()[:150])
  _frames(train / 'abseiling' / 'mixed', 2)
  _frames(train / 'abseiling' / 'mixed2', 1, size=(20, 16))
  os.rename(train / 'abseiling' / 'mixed2' / '000001.jpg',
            train / 'abseiling' / 'mixed' / '000003.jpg')
  os.rmdir(train / 'abseiling' / 'mixed2')
  builder = _build(tmp_path, manual, max_bad_fraction=0.5)
  report = _report(builder)
  for path, reason in (
      ('bowling/empty_video', 'holds no frames (.jpg, .jpeg or .png)'),
      ('bowling/zero_byte', 'frame 000002.jpg: the file is empty (0 bytes)'),
      ('abseiling/truncated', 'frame 000003.jpg: the JPEG data is truncated or corrupt'),
      ('abseiling/mixed', 'frame 000003.jpg is 16x20, frame 000001.jpg 16x12'),
  ):
    assert f'skipped\ttrain\t{train / path}\t{reason}' in report
  for path in ('bowling/numbered/.DS_Store', 'bowling/numbered/._1.png',
               'bowling/leftover.mp4'):
    assert f'ignored\t-\t{train / path}\t' in report
  assert '# train: 4 items kept, 4 skipped of 8' in report
  videos = {ex['video_id'].numpy().decode(): ex['video'].numpy()
            for ex in builder.as_dataset(split='train')}
  numbered = videos['numbered']
  assert numbered.shape == (12, 12, 16, 3)
  # Frame t is about 10 t bright: in time order 1, 2, ..., 12, not 1, 10, 11, 12, 2, ...
  assert (np.diff(numbered.reshape(12, -1).mean(axis=1)) > 5).all()


def test_too_many_bad_videos_stop_the_build_naming_the_worst_folders(tmp_path):
  manual = tmp_path / 'manual'
  _layout(manual, ['abseiling', 'bowling'])
  (manual / 'train' / 'bowling' / 'empty_video').mkdir()
  with pytest.raises(build_report.TooManyBadItemsError, match=r'1 of the 5 items of train '
                     r'\(20.0%\).*max_bad_fraction=0.05; most in .*bowling \(1\)'):
    _build(tmp_path, manual)


def test_split_and_class_mismatches_name_the_entries(tmp_path):
  manual = tmp_path / 'manual'
  _layout(manual, ['abseiling', 'café'])
  nfd = unicodedata.normalize('NFD', 'café')
  os.rename(manual / 'validation' / 'café', manual / 'validation' / nfd)
  builder = _build(tmp_path, manual)  # One class, in NFC in train and NFD in validation.
  assert builder.info.splits['validation'].num_examples == 2
  (manual / 'validation' / 'bowling').mkdir()
  with pytest.raises(video_folder.LayoutError, match="validation has 1 class folders that "
                     "train lacks: 'bowling'"):
    _build(tmp_path / 'b', manual)
  (manual / 'train' / 'extra').mkdir()
  with pytest.raises(video_folder.LayoutError, match=r"train has 3 class folders; two has 2\. "
                     r"Folders without videos: \['extra'\]"):
    _build(tmp_path / 'c', manual)
  os.rename(manual / 'validation', manual / 'val')
  with pytest.raises(video_folder.LayoutError, match=r'validation is missing: expected '
                     r'<split>/<class>/<video_id>/<frames>'):
    _build(tmp_path / 'd', manual)


def test_a_build_stopped_midway_is_removed_and_rebuilt(tmp_path):
  manual = tmp_path / 'tfds' / 'downloads' / 'manual'
  _layout(manual, ['abseiling', 'bowling'])
  builder = tfds.builder('mvitv2_video_frames', config=_TWO, data_dir=str(tmp_path / 'tfds'))
  leftover = os.path.join(os.path.dirname(os.fspath(builder.data_path)),
                          f'incomplete.ABC123_{builder.version}')
  os.makedirs(os.path.join(leftover, 'half_written'))
  prepare._remove_unfinished(builder)  # pylint: disable=protected-access
  assert not os.path.exists(leftover)
  _build(tmp_path, manual)
