"""The architecture of a ResT or ResTv2 variant."""

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ResTConfig:
  """Architecture of one ResT (version 1) or ResTv2 (version 2) variant; defaults: ResTv2-T.

  Both are four stages of pre-norm transformer blocks over a convolutional stem (stride 4)
  and three overlapping patch embeddings (3x3, stride 2), each followed by the pixel
  attention position encoding (PA). The efficient multi-head self-attention (EMSA) reduces
  keys and values by a strided depthwise conv (kernel sr + 1, stride sr) and a layer norm.
  Version 1 mixes heads by a 1x1 conv on the logits and instance-normalises each head's
  map after the softmax (`apply_transform`, heads > 1); version 2 instead adds back the
  values upsampled (depthwise conv + pixel shuffle, layer norm) before the projection.
  """
  version: int = 2
  embed_dims: Sequence[int] = (96, 192, 384, 768)
  num_heads: Sequence[int] = (1, 2, 4, 8)
  depths: Sequence[int] = (1, 2, 6, 2)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)
  mlp_ratio: float = 4.0
  apply_transform: bool = True  # Version 1: head mixing and instance norm where heads > 1.
  num_classes: int = 1000
  # Inputs are any multiple of 32; no parameter depends on it (the default input shape).
  image_size: int = 224
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32  # Compute dtype; params, softmax and norm statistics in float32.
  param_dtype: Any = jnp.float32
  attention_impl: str = 'auto'  # Plain attention's kernel (see `mvitv2_jax.ops.attention`).
  pool_impl: str = 'auto'  # The depthwise convs' kernel (see `mvitv2_jax.ops.pool`).

  @property
  def layer_norm_epsilon(self) -> float:
    # NOTE: ResT uses PyTorch's default 1e-5, ResTv2 1e-6.
    return 1e-5 if self.version == 1 else 1e-6


def image_size_rule(cfg: ResTConfig) -> tuple[int, str]:
  del cfg
  return 32, 'stem stride 4 x 2^3 for its patch embeddings (the original takes H // 2 per stage)'


def describe(cfg: ResTConfig) -> str:
  name = 'ResT' if cfg.version == 1 else 'ResTv2'
  return (f'{name} (embed_dims={tuple(cfg.embed_dims)}, depths={tuple(cfg.depths)}, '
          f'num_heads={tuple(cfg.num_heads)}, num_classes={cfg.num_classes})')
