"""Every model family and its named variants, through one registry.

  from mvitv2_jax import models
  model = models.create_model('mvitv2_s', drop_path_rate=0.1)
  models.model_names()

Families live in subpackages (`mvit/`: MViTv2 images and videos, MViTv1); `layers.py`
holds the layers they share and `registry.py` what the trainer and converter know of each.
"""

from mvitv2_jax.models import mvit
from mvitv2_jax.models.layers import trunc_normal_init
from mvitv2_jax.models.mvit import (BlockSpec, MultiScaleAttention, MultiScaleBlock, MViTv2,
                                    MViTv2Config, block_specs, pooled_grid)
from mvitv2_jax.models.registry import (Family, KeyTable, create_model, families, family_of,
                                        input_shape, model_names, variant_config)


def flops_per_example(model, image_size: int | None = None) -> dict[str, float]:
  """Analytic forward FLOPs of one example of a built model, by part ('attention', 'other')."""
  return family_of(model).flops(model.cfg, image_size)


def image_size_multiple(model_or_config) -> int:
  """What the model's build size must be a multiple of."""
  cfg = getattr(model_or_config, 'cfg', model_or_config)
  return family_of(cfg).image_size_rule(cfg)[0]


__all__ = [
    'BlockSpec', 'Family', 'KeyTable', 'MViTv2', 'MViTv2Config', 'MultiScaleAttention',
    'MultiScaleBlock', 'block_specs', 'create_model', 'families', 'family_of',
    'flops_per_example', 'image_size_multiple', 'input_shape', 'model_names', 'mvit',
    'pooled_grid', 'trunc_normal_init', 'variant_config',
]
