"""ResT (Zhang & Yang, "ResT: An Efficient Transformer for Visual Recognition", NeurIPS 2021)
and ResTv2 ("ResT V2: Simpler, Faster and Stronger", NeurIPS 2022) as flax.linen modules.

Numerically this follows the official `wofmanaf/ResT` code (`models/rest.py`,
`models/rest_v2.py`, HEAD b9245d3). Parameter names mirror its state dict
(`stage3_0/attn/sr`, `patch_embed_2/norm`, `stem/proj_1`) so the converter is a short table.
Feature maps are NHWC; tokens are row-major over the grid.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvitv2_jax import ops
from mvitv2_jax.models import conv_layers
from mvitv2_jax.models import layers
from mvitv2_jax.models.rest.config import ResTConfig
from mvitv2_jax.ops import head_mixing_attention

Array = jax.Array

# The official `_init_weights`: every conv weight trunc_normal(0.02).
_conv_init = nn.initializers.truncated_normal(stddev=0.02, lower=-100.0, upper=100.0)


def pixel_shuffle(x: Array, factor: int) -> Array:
  """PyTorch's PixelShuffle on NHWC: channel c * f^2 + i * f + j -> pixel (h * f + i, w * f + j)."""
  if factor == 1:
    return x
  batch, height, width, channels = x.shape
  out = channels // factor**2
  x = x.reshape(batch, height, width, out, factor, factor)
  return jnp.transpose(x, (0, 1, 4, 2, 5, 3)).reshape(batch, height * factor, width * factor, out)


class PA(nn.Module):
  """Pixel attention position encoding: x * sigmoid(depthwise 3x3 conv(x)), on NHWC maps."""
  cfg: ResTConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.cfg
    bias_init = conv_layers.torch_bias_init(9) if cfg.version == 1 else nn.initializers.zeros
    gate = conv_layers.DepthwiseConv(3, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                     kernel_init=_conv_init, bias_init=bias_init,
                                     pool_impl=cfg.pool_impl, name='pa_conv')(x)
    return x * jax.nn.sigmoid(gate)


class Attention(nn.Module):
  """EMSA: queries from every token, keys and values from the sr-reduced map."""
  cfg: ResTConfig
  dim: int
  num_heads: int
  sr_ratio: int

  @nn.compact
  def __call__(self, x: Array, grid: tuple[int, int]) -> Array:
    """x [B, N, C] normalised, on `grid` -> [B, N, C]."""
    cfg, heads, sr = self.cfg, self.num_heads, self.sr_ratio
    batch, head_dim = x.shape[0], self.dim // heads
    dense = functools.partial(layers.Dense, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    norm = functools.partial(layers.LayerNorm, cfg.dtype, cfg.param_dtype, cfg.layer_norm_epsilon)
    q = dense(self.dim, name='q')(x).reshape(batch, -1, heads, head_dim)
    kv_grid = grid
    if sr > 1:
      # The original's sr conv: kernel sr + 1, stride sr, padding sr // 2, with a bias.
      bias_init = (conv_layers.torch_bias_init((sr + 1)**2) if cfg.version == 1
                   else nn.initializers.zeros)
      reduced = conv_layers.DepthwiseConv(
          sr + 1, sr, dtype=cfg.dtype, param_dtype=cfg.param_dtype, kernel_init=_conv_init,
          bias_init=bias_init, pool_impl=cfg.pool_impl, name='sr')(x.reshape(batch, *grid, -1))
      kv_grid = reduced.shape[1:3]
      x = norm(name='sr_norm')(reduced.reshape(batch, -1, self.dim))
    kv = dense(2 * self.dim, name='kv')(x)
    k, v = (t.reshape(batch, -1, heads, head_dim) for t in jnp.split(kv, 2, axis=-1))
    if cfg.version == 1 and cfg.apply_transform and heads > 1:
      # Heads mixed and maps instance-normalised: no fused kernel applies (see the op).
      mix = self.param('transform_conv_kernel', _conv_init, (1, 1, heads, heads),
                       cfg.param_dtype)
      mix_bias = self.param('transform_conv_bias', conv_layers.torch_bias_init(heads),
                            (heads,), cfg.param_dtype)
      out = head_mixing_attention.head_mixing_attention(q, k, v, mix[0, 0], mix_bias)
    else:
      out = ops.attention(q, k, v, (), k_grid=tuple(kv_grid), num_prefix=0,
                          impl=cfg.attention_impl)
    out = out.reshape(batch, -1, self.dim)
    if cfg.version == 2:
      # NOTE: the original takes H // sr for the values' grid; it is the sr conv's output.
      if tuple(kv_grid) != (grid[0] // sr, grid[1] // sr):
        raise ValueError(f'ResTv2 needs token grids divisible by the sr ratio {sr}; got {grid}.')
      identity = v.reshape(batch, *kv_grid, self.dim)
      identity = conv_layers.DepthwiseConv(
          3, multiplier=sr * sr, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
          kernel_init=_conv_init, bias_init=nn.initializers.zeros, pool_impl=cfg.pool_impl,
          name='up_0')(identity)
      identity = pixel_shuffle(identity, sr).reshape(batch, -1, self.dim)
      out = out + norm(name='up_norm')(identity)
    return dense(self.dim, name='proj')(out)


class Block(nn.Module):
  """Pre-norm EMSA and MLP with stochastic depth."""
  cfg: ResTConfig
  dim: int
  num_heads: int
  sr_ratio: int
  drop_path: float

  @nn.compact
  def __call__(self, x: Array, grid: tuple[int, int], train: bool) -> Array:
    cfg = self.cfg
    norm = functools.partial(layers.LayerNorm, cfg.dtype, cfg.param_dtype, cfg.layer_norm_epsilon)
    drop_path = lambda branch: layers.DropPath(self.drop_path)(branch, train)
    x = x + drop_path(Attention(cfg, self.dim, self.num_heads, self.sr_ratio, name='attn')(
        norm(name='norm1')(x), grid))
    mlp = layers.Mlp(int(self.dim * cfg.mlp_ratio), self.dim, cfg.dtype, cfg.param_dtype,
                     name='mlp')
    return x + drop_path(mlp(norm(name='norm2')(x)))


class ResT(nn.Module):
  """ResT / ResTv2 classifier: images [B, H, W, 3] (H, W multiples of 32) -> float32 logits.

  `__call__(images, train=False, features_only=False)`; with `train`, batch norm uses and
  updates batch statistics (`mutable=['batch_stats']`) and stochastic depth needs a
  'dropout' RNG. `features_only=True` returns the four stage outputs as NHWC maps (strides
  4, 8, 16, 32; the last before the final norm).
  """
  cfg: ResTConfig

  @nn.compact
  def __call__(self, inputs: Array, train: bool = False, features_only: bool = False):
    cfg = self.cfg
    if inputs.ndim != 4 or inputs.shape[1] % 32 or inputs.shape[2] % 32:
      raise ValueError(f'Expected images [B, H, W, 3] with H and W multiples of 32, got '
                       f'{inputs.shape}.')
    x = self._stem(inputs.astype(cfg.dtype), train)  # [B, H/4, W/4, C0]
    drop_rates = np.linspace(0.0, cfg.drop_path_rate, sum(cfg.depths))
    features, index = [], 0
    for stage, (dim, heads, depth, sr) in enumerate(zip(cfg.embed_dims, cfg.num_heads,
                                                        cfg.depths, cfg.sr_ratios)):
      if stage:
        x = self._patch_embed(x, stage, dim, train)
      batch, grid = x.shape[0], tuple(x.shape[1:3])
      tokens = x.reshape(batch, -1, dim)
      for i in range(depth):
        tokens = Block(cfg, dim, heads, sr, float(drop_rates[index]),
                       name=f'stage{stage + 1}_{i}')(tokens, grid, train)
        index += 1
      x = tokens.reshape(batch, *grid, dim)
      features.append(x)
    if features_only:
      return features
    x = layers.LayerNorm(cfg.dtype, cfg.param_dtype, cfg.layer_norm_epsilon, name='norm')(
        x.reshape(x.shape[0], -1, x.shape[-1]))
    x = conv_layers.global_average(x).astype(cfg.dtype)
    logits = layers.Dense(cfg.num_classes, cfg.dtype, cfg.param_dtype, name='head')(x)
    return logits.astype(jnp.float32)

  def _conv(self, features, kernel, stride, padding, name, use_bias=True, fan_in=None):
    cfg = self.cfg
    bias_init = None if cfg.version == 1 else nn.initializers.zeros
    return conv_layers.conv(features, kernel, stride, padding, use_bias=use_bias,
                            dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name,
                            kernel_init=_conv_init, bias_init=bias_init, fan_in=fan_in)

  def _batch_norm(self, name):
    return conv_layers.BatchNorm(self.cfg.dtype, self.cfg.param_dtype, name=name)

  def _stem(self, x: Array, train: bool) -> Array:
    cfg, out = self.cfg, self.cfg.embed_dims[0]
    hidden = out // 2
    relu = jax.nn.relu
    if cfg.version == 1:  # BasicStem: conv-BN-ReLU twice, then a conv without BN, then PA.
      with_names = lambda name: f'stem_{name}'
      x = relu(self._batch_norm('stem_norm1')(
          self._conv(hidden, 3, 2, 1, with_names('conv1'), use_bias=False)(x), train))
      x = relu(self._batch_norm('stem_norm2')(
          self._conv(hidden, 3, 1, 1, with_names('conv2'), use_bias=False)(x), train))
      x = self._conv(out, 3, 2, 1, with_names('conv3'), use_bias=False)(x)
      return PA(cfg, name='stem_pos')(x)
    # ConvStem: conv-BN-ReLU at out/2 and out, a 1x1 conv, PA, layer norm.
    x = relu(self._batch_norm('stem_proj_1')(
        self._conv(hidden, 3, 2, 1, 'stem_proj_0', use_bias=False)(x), train))
    x = relu(self._batch_norm('stem_proj_4')(
        self._conv(out, 3, 2, 1, 'stem_proj_3', use_bias=False)(x), train))
    x = self._conv(out, 1, 1, 0, 'stem_proj_6')(x)
    x = PA(cfg, name='stem_pos')(x)
    return layers.LayerNorm(cfg.dtype, cfg.param_dtype, cfg.layer_norm_epsilon,
                            name='stem_norm')(x)

  def _patch_embed(self, x: Array, stage: int, dim: int, train: bool) -> Array:
    """Overlapping patch embedding into stage `stage` (1-based index + 1): 3x3 stride-2 conv."""
    cfg = self.cfg
    fan_in = x.shape[-1] * 9
    if cfg.version == 1:
      name = f'patch_embed_{stage + 1}'
      x = self._conv(dim, 3, 2, 1, f'{name}_conv', fan_in=fan_in)(x)
      x = self._batch_norm(f'{name}_norm')(x, train)
      return PA(cfg, name=f'{name}_pos')(x)
    name = f'patch_{stage + 1}'
    x = self._conv(dim, 3, 2, 1, f'{name}_proj', fan_in=fan_in)(x)
    x = PA(cfg, name=f'{name}_pos')(x)
    return layers.LayerNorm(cfg.dtype, cfg.param_dtype, cfg.layer_norm_epsilon,
                            name=f'{name}_norm')(x)
