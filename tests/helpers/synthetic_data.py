"""A learnable in-memory stand-in for `input_pipeline` (tests only).

Class c is a fixed random colour plus pixel noise, so a tiny model learns it in
a few steps; for a video config, clips of it (and several noisy views to evaluate).
Same interface as `mvitv2_jax.input_pipeline`: deterministic in the config's seed and
step, so `start_step` resumes the stream exactly.
"""

import jax
import numpy as np

from mvitv2_jax.data import video


def _example_shape(config):
  """(S, S, 3), or clips (T, S, S, 3) for a config with a `video` section."""
  s = config.image_size
  if 'video' in config:
    return (video.clip_length(config), s, s, 3)
  return (s, s, 3)


def _templates(config):
  rng = np.random.default_rng(1234)
  shape = _example_shape(config)
  colours = rng.normal(size=(config.num_classes,) + (1,) * (len(shape) - 1) + (3,))
  return np.broadcast_to(colours, (config.num_classes,) + shape).astype(np.float32)


def _examples(config, rng, n):
  labels = rng.integers(0, config.num_classes, size=n).astype(np.int32)
  noise = rng.normal(size=(n,) + _templates(config).shape[1:])
  images = (_templates(config)[labels] + noise).astype(np.float32)
  return images, labels


def _eval_views(images, config):
  """Videos get `num_views` noisy views: [n, V, T, S, S, 3]."""
  if 'video' not in config:
    return images
  noise = np.random.default_rng([98]).normal(
      size=(images.shape[0], video.num_views(config)) + images.shape[1:])
  return (images[:, None] + 0.5 * noise).astype(np.float32)


def num_examples(config, split):
  if split == config.train_split:
    return config.num_train_examples
  return config.num_eval_examples


def create_train_iterator(config, *, start_step=0):
  local_batch = config.batch_size // jax.process_count()
  step = start_step
  while True:
    rng = np.random.default_rng([config.seed, step, jax.process_index()])
    images, labels = _examples(config, rng, local_batch)
    yield {'image': images, 'label': labels}
    step += 1


def create_eval_iterator(config):
  """One pass; the last batch is padded with masked zero examples."""
  local_batch = config.eval_batch_size // jax.process_count()
  n = config.num_eval_examples // jax.process_count()
  images, labels = _examples(config, np.random.default_rng([99]), n)
  images = _eval_views(images, config)
  for start in range(0, n, local_batch):
    im, lb = images[start:start + local_batch], labels[start:start + local_batch]
    pad = local_batch - len(lb)
    yield {
        'image': np.concatenate([im, np.zeros((pad,) + im.shape[1:], im.dtype)]),
        'label': np.concatenate([lb, np.zeros(pad, np.int32)]),
        'mask': np.arange(local_batch) < len(lb),
    }
