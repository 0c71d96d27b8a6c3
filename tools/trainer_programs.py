"""The trainer's programs for the tools that compile or time them (benchmark, compile_report).

A variant's recipe is its training config (`configs/<variant>.py`, else the defaults with
the variant named), and the schedule's split sizes are ImageNet's without reading TFDS:
they fix the schedule's constants, not the programs' shapes.
"""

import ast
import importlib.util
import os

import jax
import ml_collections

from configs import default
from mvitv2_jax import models
from mvitv2_jax.train import programs as programs_lib

_CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            'configs')


class ImageNetSizes:
  """ImageNet-1K's split sizes, standing in for a data source's `num_examples`."""

  @staticmethod
  def num_examples(config: ml_collections.ConfigDict, split: str) -> int:
    return 1_281_167 if split == config.train_split else 50_000


def recipe(variant: str) -> ml_collections.ConfigDict:
  """The training config of `variant`: configs/<variant>.py (a video variant's Kinetics-400
  one, configs/video/<variant>_k400.py), else the defaults for it."""
  for path in (os.path.join(_CONFIGS_DIR, f'{variant}.py'),
               os.path.join(_CONFIGS_DIR, 'video', f'{variant}_k400.py')):
    if os.path.exists(path):
      spec = importlib.util.spec_from_file_location('recipe', path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return module.get_config()
  config = default.get_config()
  config.model = variant
  cfg = models.variant_config(variant)
  config.num_classes, config.image_size = cfg.num_classes, cfg.image_size
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> None:
  """`['depths=(2,6,36,4)', 'remat=True']` into `config.model_overrides` (Python literals)."""
  with config.unlocked():
    for item in overrides:
      name, sep, value = item.partition('=')
      if not sep or not name:
        raise ValueError(f'--override {item!r}: expected name=value.')
      try:
        config.model_overrides[name] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        config.model_overrides[name] = value  # A bare string, e.g. a policy name.


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> programs_lib.Programs:
  """The trainer's programs of `config` over `mesh`, scheduled for ImageNet's sizes."""
  return programs_lib.build(config, mesh, ImageNetSizes)
