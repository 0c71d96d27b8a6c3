"""A learnable in-memory stand-in for `input_pipeline` (tests only).

Class c is a fixed random colour plus pixel noise, so a tiny model learns it in
a few steps. Same interface as `mvitv2_jax.input_pipeline`: deterministic in the
config's seed and step, so `start_step` resumes the stream exactly.
"""

import jax
import numpy as np


def _templates(config):
  rng = np.random.default_rng(1234)
  s = config.image_size
  colours = rng.normal(size=(config.num_classes, 1, 1, 3))
  return np.broadcast_to(colours, (config.num_classes, s, s, 3)).astype(
      np.float32)


def _examples(config, rng, n):
  labels = rng.integers(0, config.num_classes, size=n).astype(np.int32)
  noise = rng.normal(size=(n,) + _templates(config).shape[1:])
  images = (_templates(config)[labels] + noise).astype(np.float32)
  return images, labels


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
  for start in range(0, n, local_batch):
    im, lb = images[start:start + local_batch], labels[start:start + local_batch]
    pad = local_batch - len(lb)
    yield {
        'image': np.concatenate([im, np.zeros((pad,) + im.shape[1:], im.dtype)]),
        'label': np.concatenate([lb, np.zeros(pad, np.int32)]),
        'mask': np.arange(local_batch) < len(lb),
    }
