"""The video source: TFDS videos -> host batches of clips, the PySlowFast way, on `stream`.

Records hold a video as encoded frames (a `tfds.features.Video`, read undecoded so that
only the sampled frames are decoded) and a label; `config.video` names their features.
Train: one random clip of T frames per video (T = the model's `num_frames`), from which
`num_sample` clips are augmented independently (repeated augmentation; the batch counts
clips): random resized crop, flip, RandAugment and random erasing, each drawn once per
clip and applied alike to all its frames. Eval: `eval_clips` uniformly spaced clips x
`eval_crops` spatial crops per video, one example [views, T, S, S, 3] per video.
Process split, per-epoch seeds, exact resume and eval padding are `stream`'s.
"""

import functools
from typing import Iterator

import jax
import ml_collections
import tensorflow as tf

from mvitv2_jax import models
from mvitv2_jax.data import augment
from mvitv2_jax.data import imagenet
from mvitv2_jax.data import random_resized_crop
from mvitv2_jax.data import stream
from mvitv2_jax.data import tfds_access


def clip_length(config: ml_collections.ConfigDict) -> int:
  """T: the frames per clip, the model's build length."""
  num_frames = models.variant_config(
      config.model, **config.model_overrides.to_dict()).num_frames
  if not num_frames:
    raise ValueError(f'{config.model} is an image model; the video pipeline needs one '
                     'with num_frames set.')
  return num_frames


# ---------------------------------------------------------------------------
# Frame sampling (PySlowFast's `get_start_end_idx` + `temporal_sampling`, and the
# SSv2 loader's segments).
# ---------------------------------------------------------------------------


def stride_indices(num_video_frames: tf.Tensor, num_frames: int, rate: int,
                   start: tf.Tensor) -> tf.Tensor:
  """`num_frames` frames spread over `num_frames * rate` frames from `start`.

  Args:
    num_video_frames: int32 [], frames in the video.
    num_frames: T.
    rate: the sampling rate r.
    start: float32 [], the clip's first frame.

  Returns:
    int32 [T] frame indices, clamped to the video (short videos repeat their ends).
  """
  span = num_frames * rate
  offsets = tf.linspace(0.0, float(span - 1), num_frames)
  last = tf.cast(num_video_frames - 1, tf.float32)
  return tf.cast(tf.clip_by_value(start + offsets, 0.0, last), tf.int32)


def stride_starts(num_video_frames: tf.Tensor, num_frames: int, rate: int, *,
                  num_clips: int = 1, seed: tf.Tensor | None = None) -> tf.Tensor:
  """Clip starts: uniform random with `seed` (train), else `num_clips` evenly spaced.

  Evenly spaced as PySlowFast's offset sampling: the first clip at the video's start
  and the last at its end (a single clip centred).

  Args:
    num_video_frames: int32 [].
    num_frames: T.
    rate: r.
    num_clips: K, test clips.
    seed: int64 [2] for a random start; None for the test starts.

  Returns:
    float32 [K] (or [1] with `seed`) start frames.
  """
  delta = tf.cast(tf.maximum(num_video_frames - num_frames * rate, 0), tf.float32)
  if seed is not None:
    return tf.random.stateless_uniform([1], seed, 0.0, 1.0) * delta
  if num_clips == 1:
    return tf.floor(delta / 2)[None]
  return tf.range(num_clips, dtype=tf.float32) * tf.floor(delta / (num_clips - 1))


def segment_indices(num_video_frames: tf.Tensor, num_frames: int,
                    seed: tf.Tensor | None = None) -> tf.Tensor:
  """One frame from each of `num_frames` equal segments (the SSv2 loader's sampling).

  Args:
    num_video_frames: int32 [].
    num_frames: T.
    seed: int64 [2]: a random frame per segment (train); None: the segment middles.

  Returns:
    int32 [T].
  """
  size = tf.cast(num_video_frames - 1, tf.float32) / num_frames
  bounds = tf.cast(tf.round(size * tf.range(num_frames + 1, dtype=tf.float32)), tf.int32)
  lo, hi = bounds[:-1], bounds[1:]
  if seed is None:
    return (lo + hi) // 2
  # randint(lo, hi), both ends included.
  u = tf.random.stateless_uniform([num_frames], seed)
  return tf.minimum(lo + tf.cast(u * tf.cast(hi - lo + 1, tf.float32), tf.int32), hi)


def _clip_indices(num_video_frames, config, *, num_clips=1, seed=None) -> tf.Tensor:
  """int32 [K, T] frame indices of the clips `config.video.sampling` picks."""
  v, num_frames = config.video, clip_length(config)
  if v.sampling == 'segments':
    return segment_indices(num_video_frames, num_frames, seed)[None]
  if v.sampling != 'stride':
    raise ValueError(f"video.sampling must be 'stride' or 'segments', not {v.sampling!r}.")
  starts = stride_starts(num_video_frames, num_frames, v.sampling_rate,
                         num_clips=num_clips, seed=seed)
  return tf.map_fn(lambda s: stride_indices(num_video_frames, num_frames, v.sampling_rate, s),
                   starts, fn_output_signature=tf.int32)


# ---------------------------------------------------------------------------
# Per-clip transforms.
# ---------------------------------------------------------------------------


def _decode_frames(encoded: tf.Tensor) -> tf.Tensor:
  """string [N] encoded frames (JPEG, PNG) -> uint8 [N, H, W, 3]."""
  return tf.map_fn(
      lambda f: tf.io.decode_image(f, channels=3, expand_animations=False), encoded,
      fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def normalize_clip(clip: tf.Tensor) -> tf.Tensor:
  """uint8 [..., H, W, 3] -> float32 normalised with the ImageNet mean/std."""
  # Static where known: the transforms after this one need static shapes.
  shape = clip.shape.as_list() if clip.shape.is_fully_defined() else tf.shape(clip)
  return tf.reshape(imagenet.normalize(tf.reshape(clip, [-1, shape[-2], 3])), shape)


def rand_augment_clip(clip: tf.Tensor, seed: tf.Tensor, **kwargs) -> tf.Tensor:
  """`augment.rand_augment` with one draw of ops and magnitudes for all frames.

  Args:
    clip: uint8 [T, H, W, 3].
    seed: int64 [2].
    **kwargs: `augment.rand_augment`'s num_ops, magnitude, magnitude_std.

  Returns:
    uint8 [T, H, W, 3].
  """
  return tf.map_fn(lambda frame: augment.rand_augment(frame, seed, **kwargs), clip)


def random_erase_clip(clip: tf.Tensor, seed: tf.Tensor, *, prob: float) -> tf.Tensor:
  """`augment.random_erase` with one box for the whole clip, noise drawn per frame.

  Args:
    clip: float32 [T, H, W, C], normalised.
    seed: int64 [2].
    prob: probability of erasing.

  Returns:
    float32 [T, H, W, C].
  """
  t, h, w, c = clip.shape
  # The frames as channels of one image: one box, per-pixel noise for every frame.
  stacked = tf.reshape(tf.transpose(clip, [1, 2, 0, 3]), [h, w, t * c])
  erased = augment.random_erase(stacked, seed, prob=prob)
  return tf.transpose(tf.reshape(erased, [h, w, t, c]), [2, 0, 1, 3])


def _augment_clip(frames: tf.Tensor, seed: tf.Tensor,
                  config: ml_collections.ConfigDict) -> tf.Tensor:
  """Random resized crop, flip, RandAugment, normalise, erase: uint8 frames -> one clip.

  Args:
    frames: uint8 [T, H, W, 3], the decoded clip.
    seed: int64 [2].
    config: the experiment config (`aug`, image_size).

  Returns:
    float32 [T, S, S, 3], S = config.image_size.
  """
  aug, size = config.aug, config.image_size
  crop_seed, flip_seed, ra_seed, erase_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4))
  shape = tf.shape(frames)
  begin, crop_size = random_resized_crop.sample_window(
      shape[1:], crop_seed, min_scale=aug.min_crop_scale)
  clip = tf.slice(frames, tf.concat([[0], begin], 0), tf.concat([[shape[0]], crop_size], 0))
  # Bilinear without antialiasing, as PySlowFast's crop resize (torch interpolate).
  clip = imagenet.round_uint8(tf.image.resize(clip, [size, size], method='bilinear'))
  clip = tf.ensure_shape(clip, [clip_length(config), size, size, 3])
  if aug.flip:
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    clip = tf.cond(flip, lambda: tf.reverse(clip, [2]), lambda: clip)
  if aug.randaugment_num_ops > 0:
    clip = rand_augment_clip(clip, ra_seed, num_ops=aug.randaugment_num_ops,
                             magnitude=aug.randaugment_magnitude,
                             magnitude_std=aug.randaugment_magnitude_std)
  clip = normalize_clip(clip)
  if aug.random_erase_prob > 0:
    clip = random_erase_clip(clip, erase_seed, prob=aug.random_erase_prob)
  return clip


def _train_example(record: dict, seed: tf.Tensor, *,
                   config: ml_collections.ConfigDict) -> dict:
  """One random clip of a video, augmented `num_sample` times."""
  v = config.video
  time_seed, *clip_seeds = tf.unstack(
      tf.random.experimental.stateless_split(seed, 1 + v.num_sample))
  encoded = record[v.video_key]
  indices = _clip_indices(tf.size(encoded), config, seed=time_seed)[0]
  frames = _decode_frames(tf.gather(encoded, indices))
  clips = tf.stack([_augment_clip(frames, s, config) for s in clip_seeds])
  labels = tf.fill([v.num_sample], tf.cast(record[v.label_key], tf.int32))
  if v.num_sample == 1:
    return {'image': clips[0], 'label': labels[0]}
  return {'image': clips, 'label': labels}


def spatial_crops(frames: tf.Tensor, size: int, num_crops: int) -> tf.Tensor:
  """PySlowFast's test crops: short side to `size`, then crops along the long side.

  Args:
    frames: uint8 [N, H, W, 3].
    size: S.
    num_crops: 1 (centre) or 3 (start, centre, end of the long side).

  Returns:
    uint8 [num_crops, N, S, S, 3].
  """
  if num_crops not in (1, 3):
    raise ValueError(f'video.eval_crops must be 1 or 3, not {num_crops}.')
  shape = tf.shape(frames)
  h, w = shape[1], shape[2]
  long_side = lambda n, short: tf.cast(tf.floor(tf.cast(n, tf.float64) / tf.cast(
      short, tf.float64) * size), tf.int32)
  new_h = tf.where(h <= w, size, long_side(h, w))
  new_w = tf.where(h <= w, long_side(w, h), size)
  frames = imagenet.round_uint8(tf.image.resize(frames, [new_h, new_w], method='bilinear'))
  centre_y = tf.cast(tf.math.ceil((new_h - size) / 2), tf.int32)
  centre_x = tf.cast(tf.math.ceil((new_w - size) / 2), tf.int32)
  positions = (1,) if num_crops == 1 else (0, 1, 2)
  crops = []
  for position in positions:
    end_y, end_x = new_h - size, new_w - size
    y = tf.where(new_h > new_w, (0, centre_y, end_y)[position], centre_y)
    x = tf.where(new_h > new_w, centre_x, (0, centre_x, end_x)[position])
    crops.append(frames[:, y:y + size, x:x + size])
  return tf.stack(crops)


def _eval_example(record: dict, *, config: ml_collections.ConfigDict) -> dict:
  """All test views of a video: float32 [K * S_crops, T, S, S, 3] and its label."""
  v, size = config.video, config.image_size
  num_frames = clip_length(config)
  encoded = record[v.video_key]
  indices = _clip_indices(tf.size(encoded), config, num_clips=v.eval_clips)  # [K, T]
  num_clips = indices.shape[0]
  frames = _decode_frames(tf.gather(encoded, tf.reshape(indices, [-1])))
  crops = spatial_crops(frames, size, v.eval_crops)  # [S_crops, K * T, S, S, 3]
  views = tf.reshape(crops, [v.eval_crops, num_clips, num_frames, size, size, 3])
  views = tf.reshape(tf.transpose(views, [1, 0, 2, 3, 4, 5]),
                     [num_clips * v.eval_crops, num_frames, size, size, 3])
  return {'image': tf.ensure_shape(normalize_clip(views),
                                   [num_views(config), num_frames, size, size, 3]),
          'label': tf.cast(record[v.label_key], tf.int32)}


def num_views(config: ml_collections.ConfigDict) -> int:
  """Views per test video: temporal clips x spatial crops."""
  clips = 1 if config.video.sampling == 'segments' else config.video.eval_clips
  return clips * config.video.eval_crops


# ---------------------------------------------------------------------------
# The data source the trainer calls.
# ---------------------------------------------------------------------------


def num_examples(config: ml_collections.ConfigDict, split: str) -> int:
  """Examples of `split` as the trainer counts them: clips for training, else videos.

  Args:
    config: the experiment config.
    split: a TFDS split string.

  Returns:
    Videos of `split` (TFDS metadata, else the config's counts), times
    `video.num_sample` for `config.train_split`.
  """
  videos = tfds_access.num_examples(config, split)
  return videos * config.video.num_sample if split == config.train_split else videos


def _train_batches(config, start_step, process_index, process_count) -> Iterator[stream.Batch]:
  return stream.train_batches(
      config, start_step, process_index, process_count,
      transform=functools.partial(_train_example, config=config),
      encoded_key=config.video.video_key, per_record=config.video.num_sample)


def create_train_iterator(config: ml_collections.ConfigDict, *,
                          start_step: int = 0) -> Iterator[stream.Batch]:
  """Endless augmented train clips for this process.

  Args:
    config: the experiment config (`video`, `aug`, data fields, image_size, model).
    start_step: batches already consumed; the stream resumes after them.

  Returns:
    Iterator of {'image': float32 [B/P, T, S, S, 3], 'label': int32 [B/P]}; B =
    config.batch_size clips, P = process count; the `num_sample` clips of a video
    are adjacent.

  Raises:
    tfds_access.DatasetNotPreparedError: the dataset is not prepared; says how to do it.
  """
  return _train_batches(config, start_step, jax.process_index(), jax.process_count())


def _eval_batches(config, process_index, process_count) -> Iterator[stream.Batch]:
  return stream.eval_batches(
      config, process_index, process_count,
      transform=functools.partial(_eval_example, config=config),
      encoded_key=config.video.video_key)


def create_eval_iterator(config: ml_collections.ConfigDict) -> Iterator[stream.Batch]:
  """One pass over `config.eval_split` for this process, every view of each video.

  Args:
    config: the experiment config.

  Returns:
    Iterator of {'image': float32 [E/P, V, T, S, S, 3], 'label': int32 [E/P],
    'mask': bool [E/P]}; E = config.eval_batch_size videos, V = `num_views`.
    Padding videos are zeros with mask False; each video appears once.

  Raises:
    tfds_access.DatasetNotPreparedError: the dataset is not prepared; says how to do it.
  """
  return _eval_batches(config, jax.process_index(), jax.process_count())
