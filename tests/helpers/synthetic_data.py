"""A learnable in-memory stand-in for `mvitv2_jax.data.images` (tests only).

Class c is a fixed random colour plus pixel noise, so a tiny model learns it in
a few steps; for a video config, clips of it (and several noisy views to evaluate).
Same interface as `mvitv2_jax.data.images`: deterministic in the config's seed and
step, so `start_step` resumes the stream exactly, and the global batch is the same for
any number of processes.
"""

import types

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
  """This process's rows of a global batch that depends on the seed and step alone."""
  local_batch = config.batch_size // jax.process_count()
  first = jax.process_index() * local_batch
  step = start_step
  while True:
    images, labels = _examples(config, np.random.default_rng([config.seed, step]),
                               config.batch_size)
    yield {'image': images[first:first + local_batch],
           'label': labels[first:first + local_batch]}
    step += 1


def create_eval_iterator(config):
  """One pass; each process takes its slice, padded with masked zero examples.

  Every process yields the same number of batches (as the TFDS pipeline does).
  """
  processes = jax.process_count()
  local_batch = config.eval_batch_size // processes
  total = config.num_eval_examples
  images, labels = _examples(config, np.random.default_rng([99]), total)
  images = _eval_views(images, config)
  mine = np.array_split(np.arange(total), processes)[jax.process_index()]
  num_batches = -(-(-(-total // processes)) // local_batch)
  for b in range(num_batches):
    rows = mine[b * local_batch:(b + 1) * local_batch]
    pad = local_batch - len(rows)
    yield {
        'image': np.concatenate([images[rows],
                                 np.zeros((pad,) + images.shape[1:], images.dtype)]),
        'label': np.concatenate([labels[rows], np.zeros(pad, np.int32)]),
        'mask': np.arange(local_batch) < len(rows),
    }



def nan_images_from(first_bad_step: int) -> types.SimpleNamespace:
  """This data source, with every train image NaN from step index `first_bad_step` on."""

  def poisoned_train_iterator(config, *, start_step=0):
    batches = create_train_iterator(config, start_step=start_step)
    for step, batch in enumerate(batches, start_step):
      if step >= first_bad_step:
        batch['image'] = np.full_like(batch['image'], np.nan)
      yield batch

  return types.SimpleNamespace(num_examples=num_examples,
                               create_eval_iterator=create_eval_iterator,
                               create_train_iterator=poisoned_train_iterator)
