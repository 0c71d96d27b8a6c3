"""Which input pipeline a config reads: videos when it has a `video` section, else images."""

import ml_collections

from mvitv2_jax.data import images as pipeline
from mvitv2_jax.data import video


def for_config(config: ml_collections.ConfigDict):
  """The data source module (`num_examples`, `create_train_iterator`, `create_eval_iterator`)."""
  return video if 'video' in config else pipeline


def example_shape(config: ml_collections.ConfigDict, input_size: tuple[int, ...], *,
                  train: bool) -> tuple[int, ...]:
  """One example of a batch: [*input_size, 3]; a video test example holds all its views."""
  example = (*input_size, 3)
  if not train and 'video' in config:
    return (video.num_views(config), *example)
  return example
