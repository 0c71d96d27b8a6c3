"""Every model family and its named variants, through one registry.

  from mvitv2_jax import models
  model = models.create_model('mvitv2_s', drop_path_rate=0.1)
  models.model_names()

Families live in subpackages (`mvit/`: MViTv2 images and videos, MViTv1; its config
class is `models.mvit.MViTv2Config`; `rest/`: ResT and ResTv2; `lit/`: LIT and LITv2); `layers.py` holds the layers they share and
`registry.py` what the trainer and converter know of each.
"""

from mvitv2_jax.models import lit
from mvitv2_jax.models import mvit
from mvitv2_jax.models import rest
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
    'Family', 'KeyTable', 'create_model', 'families', 'family_of', 'flops_per_example',
    'image_size_multiple', 'input_shape', 'lit', 'model_names', 'mvit', 'rest', 'variant_config',
]
