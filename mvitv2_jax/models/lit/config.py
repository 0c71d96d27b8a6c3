"""The architecture of a LIT or LITv2 variant."""

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LITConfig:
  """Architecture of one LIT (version 1) or LITv2 (version 2) variant; defaults: LIT-S.

  Four stages; the first two hold MLP-only blocks, the last two attention blocks; between
  stages a Deformable Token Merging (a 2x2 stride-2 DCNv1 with learned offsets, BatchNorm,
  GELU) halves the grid and doubles the width. Layouts (`layout`):
  - 'swin' (LIT-S/M/B, LITv2): a 4x4 patch conv with layer norm, blocks in `layers.i`, a
    token merging at the end of each of the first three; LIT's attention carries a
    relative-position bias over the whole stage map (its tables depend on `image_size`);
    LITv2's is HiLo (windowed Hi-Fi heads and Lo-Fi heads on pooled keys) and its MLPs
    hold a 3x3 depthwise conv.
  - 'pvt' (LIT-Ti): PVT's layout: a position embedding per stage (sized by
    `image_size`), a class token in stage 4 whose output feeds the head, layer norm eps
    1e-6 but after the first patch embedding (1e-5).
  """
  version: int = 1
  layout: str = 'swin'
  embed_dims: Sequence[int] = (96, 192, 384, 768)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  depths: Sequence[int] = (2, 2, 6, 2)
  mlp_ratios: Sequence[float] = (4.0, 4.0, 4.0, 4.0)
  has_msa: Sequence[int] = (0, 0, 1, 1)  # Attention blocks in the stages marked 1.
  alpha: float = 0.9  # LITv2: the share of Lo-Fi heads.
  local_ws: Sequence[int] = (0, 0, 2, 1)  # LITv2: HiLo's window size per stage (1: plain MSA).
  num_classes: int = 1000
  # Build size: fixes LIT's rel-pos tables and LIT-Ti's position embeddings (those run at
  # this size only, as the original); LITv2 takes any multiple of 32.
  image_size: int = 224
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32  # Compute dtype; params, softmax and norm statistics in float32.
  param_dtype: Any = jnp.float32
  attention_impl: str = 'auto'  # See `mvitv2_jax.ops.attention`.
  pool_impl: str = 'auto'  # LITv2's depthwise convs (see `mvitv2_jax.ops.pool`).
  deform_impl: str = 'auto'  # 'gather' or 'one_hot' (see `mvitv2_jax.ops.deform_conv`).

  @property
  def patch_grid(self) -> int:
    return self.image_size // 4

  @property
  def fixed_size(self) -> bool:
    """Whether inputs must be the build size (position tables of that size)."""
    return self.version == 1


def image_size_rule(cfg: LITConfig) -> tuple[int, str]:
  del cfg
  return 32, 'patch stride 4 x 2^3 for its three token mergings'


def describe(cfg: LITConfig) -> str:
  name = {(1, 'pvt'): 'LIT-Ti layout', (1, 'swin'): 'LIT', (2, 'swin'): 'LITv2'}.get(
      (cfg.version, cfg.layout), 'LIT')
  return (f'{name} (embed_dims={tuple(cfg.embed_dims)}, depths={tuple(cfg.depths)}, '
          f'num_heads={tuple(cfg.num_heads)}, num_classes={cfg.num_classes}, '
          f'image_size={cfg.image_size})')
