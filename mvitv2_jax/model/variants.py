"""The registry of named MViT variants (image MViTv2, video MViTv2, MViTv1) and `create_model`."""

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

# The PySlowFast MViT family (Kinetics-400 heads by default): a spatiotemporal stem and
# pooling over (T, H, W), class token, tables resized as the original does when applied.
_VIDEO = dict(num_frames=16, patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4),
              patch_padding=(1, 3, 3), pool_kernel=(3, 3, 3), kv_stride=(1, 8, 8),
              q_stride=(1, 2, 2), cls_token=True, rel_pos_interpolate=True, num_classes=400,
              head_dropout_rate=0.5)
# MViTv1: absolute position embeddings, no rel-pos, no residual pooling, q pooled only at
# stage entries, the MLP widening at the end of each stage.
_MVITV1 = dict(rel_pos=False, residual_pooling=False, dim_mul_in_att=False,
               pool_q_every_block=False, cls_token=True, rel_pos_interpolate=True)
_VARIANTS.update({
    'mvitv2_s_16x4': dict(_VIDEO, depths=(1, 2, 11, 2)),
    'mvitv2_b_32x3': dict(_VIDEO, depths=(2, 3, 16, 3), num_frames=32),
    'mvitv2_l_40x3': dict(_VIDEO, embed_dim=144, num_heads=2, depths=(2, 6, 36, 4),
                          num_frames=40, image_size=312),
    'mvit_b_16x4': dict(_VIDEO, **_MVITV1, depths=(1, 2, 11, 2), abs_pos='separable'),
    'mvit_b_16': dict(_MVITV1, depths=(1, 2, 11, 2), abs_pos='joint'),
})


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
  for key in ('depths', 'patch_kernel', 'patch_stride', 'patch_padding', 'pool_kernel',
              'kv_stride', 'q_stride'):
    if isinstance(values.get(key), list):  # E.g. from a JSON config.
      values[key] = tuple(values[key])
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
