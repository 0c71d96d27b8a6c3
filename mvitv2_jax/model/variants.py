"""The registry of named MViTv2 variants and `create_model`."""

import dataclasses

import jax.numpy as jnp

from mvitv2_jax.model.config import MViTv2Config
from mvitv2_jax.model.mvit import MViTv2

_VARIANTS = {
    'mvitv2_t': dict(depths=(1, 2, 5, 2)),
    'mvitv2_s': dict(depths=(1, 2, 11, 2)),
    'mvitv2_b': dict(depths=(2, 3, 16, 3)),
    'mvitv2_l': dict(embed_dim=144, num_heads=2, depths=(2, 6, 36, 4), dim_mul_in_att=False),
    'mvitv2_b_cls': dict(depths=(2, 3, 16, 3), cls_token=True),
    'mvitv2_l_cls': dict(embed_dim=144, num_heads=2, depths=(2, 6, 36, 4), cls_token=True),
    'mvitv2_h_cls': dict(embed_dim=192, num_heads=3, depths=(4, 8, 60, 8), cls_token=True),
    # A small model for the demo data (64x64 images, 10 classes) and tests.
    'mvitv2_demo': dict(embed_dim=32, depths=(1, 1, 2, 1), image_size=64, num_classes=10),
}


def model_names() -> list[str]:
  return sorted(_VARIANTS)


def variant_config(name: str, **overrides) -> MViTv2Config:
  """The `MViTv2Config` of a named variant with `overrides` applied."""
  if name not in _VARIANTS:
    raise ValueError(f'Unknown model {name!r}. Known models: {", ".join(model_names())}.')
  fields = {f.name for f in dataclasses.fields(MViTv2Config)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f'Unknown model options {unknown}. Options: {", ".join(sorted(fields))}.')
  values = {**_VARIANTS[name], **overrides}
  for key in ('dtype', 'param_dtype'):
    if isinstance(values.get(key), str):
      values[key] = jnp.dtype(values[key])
  if 'depths' in values:
    values['depths'] = tuple(values['depths'])
  return MViTv2Config(**values)


def create_model(name: str, num_classes: int | None = None, **overrides) -> MViTv2:
  """Builds a named MViTv2 variant.

  Args:
    name: one of `model_names()`, e.g. 'mvitv2_s'.
    num_classes: classifier width (default: 1000, or the variant's own).
    **overrides: any `MViTv2Config` field, e.g. `image_size=384`, `dtype='bfloat16'`,
      `drop_path_rate=0.1`, `cls_residual_q=True`.

  Returns:
    The `MViTv2` module.
  """
  if num_classes is not None:
    overrides['num_classes'] = num_classes
  return MViTv2(variant_config(name, **overrides))
