"""Tests for mvitv2_jax.data.video: clip sampling, clip augmentation, the demo and folder builders."""

import collections
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs.video import demo
from mvitv2_jax.data import tfds_access
from mvitv2_jax.data import video
from mvitv2_jax.data import video_demo
from mvitv2_jax.data import video_folder
from tests.helpers import training

TINY = training.DEMO_MOTION_TINY


def _config(data_dir, **overrides):
  config = demo.get_config()
  config.dataset = TINY
  config.data_dir = data_dir
  config.model_overrides.num_frames = 4
  config.image_size = 16
  config.batch_size = 8
  config.eval_batch_size = 6
  config.shuffle_buffer = 64
  training.apply_overrides(config, overrides)
  return config


def _seed(i):
  return tf.constant([7, i], tf.int64)


def test_train_clip_is_strided_and_within_the_video():
  starts = [float(video.stride_starts(tf.constant(100), 16, 4, seed=_seed(i))[0])
            for i in range(50)]
  assert 0 <= min(starts) and max(starts) <= 36 and len(set(starts)) > 40
  indices = video.stride_indices(tf.constant(100), 16, 4, tf.constant(10.7)).numpy()
  # torch.linspace(start, start + 63, 16), truncated: steps of 4.2.
  np.testing.assert_array_equal(indices, np.floor(10.7 + np.linspace(0, 63, 16)).astype(int))


def test_eval_clips_are_uniform_from_start_to_end():
  starts = video.stride_starts(tf.constant(100), 16, 4, num_clips=5).numpy()
  np.testing.assert_array_equal(starts, [0, 9, 18, 27, 36])  # Last clip ends at frame 99.
  assert video.stride_starts(tf.constant(100), 16, 4, num_clips=1).numpy().tolist() == [18]


def test_short_videos_repeat_their_last_frame():
  assert video.stride_starts(tf.constant(20), 16, 4, num_clips=5).numpy().tolist() == [0] * 5
  indices = video.stride_indices(tf.constant(20), 16, 4, tf.constant(0.0)).numpy()
  assert indices.max() == 19 and (indices[5:] == 19).all() and (np.diff(indices) >= 0).all()


def test_segment_sampling():
  middles = video.segment_indices(tf.constant(33), 16).numpy()
  bounds = np.round(2.0 * np.arange(17)).astype(int)  # (33 - 1) / 16 = 2 per segment.
  np.testing.assert_array_equal(middles, (bounds[:-1] + bounds[1:]) // 2)
  for i in range(10):
    drawn = video.segment_indices(tf.constant(33), 16, _seed(i)).numpy()
    assert ((drawn >= bounds[:-1]) & (drawn <= bounds[1:])).all()


def test_clip_augmentation_is_the_same_for_every_frame():
  config = _config('', **{'aug.randaugment_num_ops': 4, 'aug.random_erase_prob': 0.0})
  config.aug.flip = True
  frame = np.random.default_rng(0).integers(0, 256, (24, 30, 3)).astype(np.uint8)
  frames = tf.constant(np.stack([frame] * 4))
  for i in range(3):
    clip = video._augment_clip(frames, _seed(i), config).numpy()
    assert clip.shape == (4, 16, 16, 3)
    for t in range(1, 4):
      np.testing.assert_array_equal(clip[t], clip[0])


def test_random_erasing_uses_one_box_for_the_clip():
  clip = tf.zeros([4, 16, 16, 3])
  erased = video.random_erase_clip(clip, _seed(1), prob=1.0).numpy()
  boxes = erased.any(axis=-1)  # [T, H, W]: where noise was pasted.
  assert boxes[0].any() and (boxes == boxes[0]).all()
  assert not np.array_equal(erased[0], erased[1])  # Noise drawn per frame.


def test_spatial_crops_follow_the_long_side():
  frames = tf.constant(np.arange(2 * 20 * 40 * 3, dtype=np.uint8).reshape(2, 20, 40, 3))
  crops = video.spatial_crops(frames, 10, 3).numpy()  # Resized to 10x20.
  assert crops.shape == (3, 2, 10, 10, 3)
  resized = tf.image.resize(frames, [10, 20], method='bilinear').numpy()
  resized = np.clip(np.round(resized), 0, 255).astype(np.uint8)
  for i, x in enumerate((0, 5, 10)):
    np.testing.assert_array_equal(crops[i], resized[:, :, x:x + 10])
  tall = video.spatial_crops(tf.transpose(frames, [0, 2, 1, 3]), 10, 1).numpy()
  assert tall.shape == (1, 2, 10, 10, 3)


def test_demo_classes_differ_only_by_motion():
  videos = [video_demo.make_video(label, np.random.default_rng(3))
            for label in range(len(video_demo.CLASS_NAMES))]
  for v in videos[1:]:  # The same draws: the first frames are identical.
    np.testing.assert_array_equal(v[0], videos[0][0])
  later = {v[5].tobytes() for v in videos}
  assert len(later) == len(videos)  # After a few frames every class is elsewhere.


def test_train_batches_shapes_and_repeated_augmentation(demo_motion_tiny_dir):
  config = _config(demo_motion_tiny_dir)
  batch = next(video.create_train_iterator(config))
  assert batch['image'].shape == (8, 4, 16, 16, 3) and batch['image'].dtype == np.float32
  assert batch['label'].shape == (8,) and batch['label'].dtype == np.int32
  # num_sample 2: adjacent clips come from one video, augmented differently.
  np.testing.assert_array_equal(batch['label'][0::2], batch['label'][1::2])
  assert not np.array_equal(batch['image'][0], batch['image'][1])
  assert video.num_examples(config, 'train') == 80  # 40 videos x 2 clips.
  assert video.num_examples(config, 'validation') == 21


def test_train_is_deterministic_and_resumes_exactly_mid_epoch(demo_motion_tiny_dir):
  # 40 videos / 4 per batch: 10 steps per epoch, so step 12 lies in epoch 1.
  config = _config(demo_motion_tiny_dir)
  stream = video.create_train_iterator(config)
  fresh = [next(stream) for _ in range(13)]
  epoch0 = np.concatenate([b['label'][0::2] for b in fresh[:10]])
  labels = collections.Counter(int(ex['label']) for ex in tfds.builder(
      TINY, data_dir=demo_motion_tiny_dir).as_dataset(split='train'))
  assert collections.Counter(epoch0.tolist()) == labels  # Each video once per epoch.
  for start in (3, 12):
    resumed = next(video.create_train_iterator(config, start_step=start))
    np.testing.assert_array_equal(resumed['image'], fresh[start]['image'])
    np.testing.assert_array_equal(resumed['label'], fresh[start]['label'])


def test_simulated_processes_get_their_own_videos(demo_motion_tiny_dir):
  config = _config(demo_motion_tiny_dir)
  batches = [next(video._train_batches(config, 0, index, 2)) for index in range(2)]
  assert all(b['image'].shape == (4, 4, 16, 16, 3) for b in batches)
  assert not np.array_equal(batches[0]['image'], batches[1]['image'])


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_counts_every_video_once_with_all_views(demo_motion_tiny_dir, process_count):
  config = _config(demo_motion_tiny_dir)  # 21 videos, batches of 6: the last one padded.
  per_process = [list(video._eval_batches(config, index, process_count))
                 for index in range(process_count)]
  assert len({len(b) for b in per_process}) == 1
  batches = [b for bs in per_process for b in bs]
  for b in batches:
    assert b['image'].shape == (6 // process_count, 2, 4, 16, 16, 3)
    assert not b['image'][~b['mask']].any()
  masks = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])[masks]
  assert masks.sum() == 21
  expected = collections.Counter(int(ex['label']) for ex in tfds.builder(
      TINY, data_dir=demo_motion_tiny_dir).as_dataset(split='validation'))
  assert collections.Counter(labels.tolist()) == expected
  first = batches[0]['image'][0]
  assert not np.array_equal(first[0], first[1])  # Two clips from different times.


def test_missing_kinetics_says_how_to_prepare_it(tmp_path):
  config = _config(str(tmp_path), dataset='mvitv2_video_frames/kinetics400')
  with pytest.raises(tfds_access.DatasetNotPreparedError) as error:
    video.create_train_iterator(config)
  message = str(error.value)
  assert 'ffmpeg' in message and 'python -m mvitv2_jax.data.prepare mvitv2_video_frames/kinetics400' in message
  assert os.path.join(str(tmp_path), 'downloads', 'manual', 'kinetics400') in message
  with pytest.raises(tfds_access.DatasetNotPreparedError, match='mvitv2_video_frames/kinetics400 --data_dir='):
    video.create_eval_iterator(config)


def test_frame_folder_builder(tmp_path):
  manual = tmp_path / 'manual'
  rng = np.random.default_rng(0)
  for split, per_class in (('train', 3), ('validation', 1)):
    for name in ('bowling', 'abseiling'):
      for k in range(per_class):
        folder = manual / split / name / f'{name}_{k}'
        folder.mkdir(parents=True)
        for t in range(5 + k):
          Image.fromarray(rng.integers(0, 256, (12, 20, 3)).astype(np.uint8)).save(
              folder / f'{t:06d}.jpg')
  builder = tfds.builder(
      'mvitv2_video_frames', config=video_folder.FramesConfig(name='two', num_classes=2),
      data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  examples = list(builder.as_dataset(split='train'))
  assert len(examples) == 6
  first = examples[0]
  assert first['video'].shape[1:] == (12, 20, 3)
  by_id = {ex['video_id'].numpy().decode(): ex for ex in examples}
  assert int(by_id['abseiling_2']['label']) == 0 and int(by_id['bowling_0']['label']) == 1
  assert by_id['abseiling_2']['video'].shape[0] == 7
  assert builder.info.splits['validation'].num_examples == 2
