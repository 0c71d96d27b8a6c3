"""LIT (Pan et al., "Less is More: Pay Less Attention in Vision Transformers", AAAI 2022) and
LITv2 ("Fast Vision Transformers with HiLo Attention", NeurIPS 2022) as flax.linen modules.

Numerically this follows the official code: `ziplab/LIT` (HEAD 742e961;
`classification/code_for_lit_s_m_b` for LIT-S/M/B, `code_for_lit_ti` for LIT-Ti) and
`ziplab/LITv2` (HEAD 7501c86, `classification/models`). Parameter names mirror their state
dicts (`layers_2/blocks_0/attn/qkv`, `layers_0/downsample/dconv/conv_offset`,
`patch_embed2/norm_layer`) so the converter is a short table. Maps are NHWC; tokens are
row-major over the grid, LIT-Ti's class token first in stage 4.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvitv2_jax import ops
from mvitv2_jax.models import conv_layers
from mvitv2_jax.models import layers
from mvitv2_jax.models.lit.config import LITConfig
from mvitv2_jax.ops import deform_conv

Array = jax.Array


def relative_position_index(height: int, width: int) -> np.ndarray:
  """LIT's (Swin's) index [N, N] into the (2H-1)(2W-1) table, for a H x W token grid."""
  coords = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing='ij')).reshape(2, -1)
  relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
  relative[:, :, 0] += height - 1
  relative[:, :, 1] += width - 1
  relative[:, :, 0] *= 2 * width - 1
  return relative.sum(-1)


def _norm(cfg: LITConfig, name: str, epsilon: float | None = None):
  # NOTE: LIT-S/M/B and LITv2 use PyTorch's default 1e-5; LIT-Ti 1e-6 but after its first
  # patch embedding.
  if epsilon is None:
    epsilon = 1e-6 if cfg.layout == 'pvt' else 1e-5
  return layers.LayerNorm(cfg.dtype, cfg.param_dtype, epsilon, name=name)


class DeformConv(nn.Module):
  """The authors' `DeformConv2dPack`: an offset conv (zero-initialised) and a DCNv1 conv.

  Params `kernel` [k, k, C, O], `bias` [O], `conv_offset/{kernel, bias}` (2 k^2 offsets,
  (dy, dx) per tap). The original trains the offset conv's weight at 0.01x the learning rate
  (`OFFSET_LR_MULTI`, `dconv_lr_ratio`): the family's `lr_multipliers`, applied by the
  optimizer.
  """
  features: int
  kernel_size: int
  stride: int
  cfg: LITConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg, k = self.cfg, self.kernel_size
    fan_in = x.shape[-1] * k * k
    offsets = nn.Conv(2 * k * k, (k, k), strides=(self.stride,) * 2, padding='VALID',
                      dtype=jnp.float32, param_dtype=cfg.param_dtype,
                      kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                      name='conv_offset')(x.astype(jnp.float32))
    kernel = self.param('kernel', layers.torch_conv_init, (k, k, x.shape[-1], self.features),
                        cfg.param_dtype)
    bias = self.param('bias', conv_layers.torch_bias_init(fan_in), (self.features,),
                      cfg.param_dtype)
    return deform_conv.deform_conv(x.astype(cfg.dtype), offsets, kernel, bias,
                                   strides=(self.stride,) * 2, padding=(0, 0),
                                   impl=cfg.deform_impl)


class DeformableTokenMerging(nn.Module):
  """DTM: a 2x2 stride-2 deformable conv to `features`, BatchNorm, exact GELU; NHWC maps."""
  features: int
  cfg: LITConfig

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    x = DeformConv(self.features, 2, 2, self.cfg, name='dconv')(x)
    x = conv_layers.BatchNorm(self.cfg.dtype, self.cfg.param_dtype, name='norm_layer')(x, train)
    return layers.gelu(x)


class DWMlp(nn.Module):
  """LITv2's MLP: fc1, 3x3 depthwise conv over the token grid, GELU, fc2."""
  hidden_dim: int
  out_dim: int
  cfg: LITConfig

  @nn.compact
  def __call__(self, x: Array, grid: tuple[int, int]) -> Array:
    cfg = self.cfg
    x = layers.Dense(self.hidden_dim, cfg.dtype, cfg.param_dtype, name='fc1')(x)
    batch = x.shape[0]
    # The original's init: normal(0, sqrt(2 / fan_out)), fan_out = 9 for a depthwise conv.
    x = conv_layers.DepthwiseConv(3, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                  kernel_init=nn.initializers.normal(np.sqrt(2.0 / 9.0)),
                                  bias_init=nn.initializers.zeros, pool_impl=cfg.pool_impl,
                                  name='dwconv')(x.reshape(batch, *grid, -1))
    x = layers.gelu(x.reshape(batch, -1, self.hidden_dim))
    return layers.Dense(self.out_dim, cfg.dtype, cfg.param_dtype, name='fc2')(x)


class RelPosAttention(nn.Module):
  """LIT's attention over the whole stage map with a learned bias per relative position.

  The bias is a general [heads, N, N] term: it goes to `ops.attention` as one factored
  term over a single key axis of N, so the platform's kernel runs it (XLA:CPU's einsum
  adds it; the fused kernels fold it into q and k at width d + N).
  """
  dim: int
  num_heads: int
  grid: tuple[int, int]
  cfg: LITConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg, heads = self.cfg, self.num_heads
    batch, tokens, _ = x.shape
    height, width = self.grid
    table = self.param('relative_position_bias_table', layers.trunc_normal_init,
                       ((2 * height - 1) * (2 * width - 1), heads), cfg.param_dtype)
    index = relative_position_index(height, width)
    bias = jnp.transpose(table[index.reshape(-1)].reshape(tokens, tokens, heads), (2, 0, 1))
    bias = jnp.broadcast_to(bias.astype(jnp.float32)[None], (batch, heads, tokens, tokens))
    qkv = layers.Dense(3 * self.dim, cfg.dtype, cfg.param_dtype, name='qkv')(x)
    q, k, v = (t.reshape(batch, tokens, heads, -1) for t in jnp.split(qkv, 3, axis=-1))
    out = ops.attention(q, k, v, (bias,), k_grid=(tokens,), num_prefix=0,
                        impl=cfg.attention_impl)
    return layers.Dense(self.dim, cfg.dtype, cfg.param_dtype, name='proj')(
        out.reshape(batch, tokens, self.dim))


class ViTAttention(nn.Module):
  """LIT-Ti's plain multi-head attention (class token included)."""
  dim: int
  num_heads: int
  cfg: LITConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.cfg
    batch, tokens, _ = x.shape
    qkv = layers.Dense(3 * self.dim, cfg.dtype, cfg.param_dtype, name='qkv')(x)
    q, k, v = (t.reshape(batch, tokens, self.num_heads, -1) for t in jnp.split(qkv, 3, -1))
    out = ops.attention(q, k, v, (), k_grid=(), num_prefix=0, impl=cfg.attention_impl)
    return layers.Dense(self.dim, cfg.dtype, cfg.param_dtype, name='proj')(
        out.reshape(batch, tokens, self.dim))


class HiLo(nn.Module):
  """LITv2's HiLo attention: Hi-Fi heads attend within ws x ws windows, Lo-Fi heads attend
  from every token to the ws x ws average-pooled map; outputs concatenated [Hi-Fi, Lo-Fi].

  `window_size` 1 is plain multi-head attention (all heads Lo-Fi, nothing pooled).
  """
  dim: int
  num_heads: int
  window_size: int
  alpha: float
  cfg: LITConfig

  @nn.compact
  def __call__(self, x: Array, grid: tuple[int, int]) -> Array:
    cfg, ws = self.cfg, self.window_size
    head_dim = self.dim // self.num_heads
    l_heads = int(self.num_heads * self.alpha)
    h_heads = self.num_heads - l_heads
    if ws == 1:
      h_heads, l_heads = 0, self.num_heads
    batch, (height, width) = x.shape[0], grid
    x = x.reshape(batch, height, width, self.dim)
    dense = functools.partial(layers.Dense, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    attend = functools.partial(ops.attention, rel_terms=(), k_grid=(), num_prefix=0,
                               impl=cfg.attention_impl)
    outputs = []
    if h_heads:
      if height % ws or width % ws:
        raise ValueError(f'HiLo windows of {ws} need a token grid divisible by it; got {grid}.')
      h_dim = h_heads * head_dim
      windows = x.reshape(batch, height // ws, ws, width // ws, ws, self.dim)
      windows = jnp.transpose(windows, (0, 1, 3, 2, 4, 5)).reshape(-1, ws * ws, self.dim)
      qkv = dense(3 * h_dim, name='h_qkv')(windows)
      q, k, v = (t.reshape(-1, ws * ws, h_heads, head_dim) for t in jnp.split(qkv, 3, -1))
      out = attend(q, k, v).reshape(batch, height // ws, width // ws, ws, ws, h_dim)
      out = jnp.transpose(out, (0, 1, 3, 2, 4, 5)).reshape(batch, height, width, h_dim)
      outputs.append(dense(h_dim, name='h_proj')(out))
    if l_heads:
      l_dim = l_heads * head_dim
      q = dense(l_dim, name='l_q')(x).reshape(batch, -1, l_heads, head_dim)
      pooled = x
      if ws > 1:  # AvgPool2d(ws, ws): means of the non-overlapping windows.
        pooled = x.reshape(batch, height // ws, ws, width // ws, ws, self.dim).astype(
            jnp.float32).mean(axis=(2, 4)).astype(x.dtype)
      kv = dense(2 * l_dim, name='l_kv')(pooled.reshape(batch, -1, self.dim))
      k, v = (t.reshape(batch, -1, l_heads, head_dim) for t in jnp.split(kv, 2, -1))
      out = attend(q, k, v).reshape(batch, height, width, l_dim)
      outputs.append(dense(l_dim, name='l_proj')(out))
    out = outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=-1)
    return out.reshape(batch, height * width, self.dim)


class Block(nn.Module):
  """A pre-norm block: attention (stages with `has_msa`) then the MLP, stochastic depth."""
  dim: int
  num_heads: int
  mlp_ratio: float
  stage: int
  grid: tuple[int, int]
  drop_path: float
  cfg: LITConfig

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    cfg = self.cfg
    drop_path = lambda branch: layers.DropPath(self.drop_path)(branch, train)
    if cfg.has_msa[self.stage]:
      y = _norm(cfg, 'norm1')(x)
      if cfg.version == 2:
        y = HiLo(self.dim, self.num_heads, cfg.local_ws[self.stage], cfg.alpha, cfg,
                 name='attn')(y, self.grid)
      elif cfg.layout == 'pvt':
        y = ViTAttention(self.dim, self.num_heads, cfg, name='attn')(y)
      else:
        y = RelPosAttention(self.dim, self.num_heads, self.grid, cfg, name='attn')(y)
      x = x + drop_path(y)
    hidden = int(self.dim * self.mlp_ratio)
    y = _norm(cfg, 'norm2')(x)
    if cfg.version == 2:
      y = DWMlp(hidden, self.dim, cfg, name='mlp')(y, self.grid)
    else:
      y = layers.Mlp(hidden, self.dim, cfg.dtype, cfg.param_dtype, name='mlp')(y)
    return x + drop_path(y)


class Stage(nn.Module):
  """LIT-S/M/B and LITv2's `LITLayer`: blocks, then token merging (all but the last stage).

  Returns (the stage's output map, the merged map or None).
  """
  stage: int
  grid: tuple[int, int]
  drop_rates: tuple[float, ...]
  cfg: LITConfig

  @nn.compact
  def __call__(self, x: Array, train: bool):
    cfg, stage = self.cfg, self.stage
    dim = cfg.embed_dims[stage]
    batch = x.shape[0]
    tokens = x.reshape(batch, -1, dim)
    for j, rate in enumerate(self.drop_rates):
      tokens = Block(dim, cfg.num_heads[stage], cfg.mlp_ratios[stage], stage, self.grid, rate,
                     cfg, name=f'blocks_{j}')(tokens, train)
    x = tokens.reshape(batch, *self.grid, dim)
    if stage == len(cfg.depths) - 1:
      return x, None
    return x, DeformableTokenMerging(cfg.embed_dims[stage + 1], cfg, name='downsample')(x, train)


class LIT(nn.Module):
  """LIT / LITv2 classifier: images [B, H, W, 3] -> float32 logits [B, num_classes].

  `__call__(images, train=False, features_only=False)`: with `train`, BatchNorm (in the
  token mergings) uses and updates batch statistics (`mutable=['batch_stats']`) and
  stochastic depth needs a 'dropout' RNG. `features_only=True` returns the four stage
  outputs as NHWC maps (strides 4 to 32; the class token dropped, no final norm).
  """
  cfg: LITConfig

  @nn.compact
  def __call__(self, inputs: Array, train: bool = False, features_only: bool = False):
    cfg = self.cfg
    if inputs.ndim != 4 or inputs.shape[1] % 32 or inputs.shape[2] % 32:
      raise ValueError(f'Expected images [B, H, W, 3] with H and W multiples of 32, got '
                       f'{inputs.shape}.')
    if cfg.fixed_size and inputs.shape[1:3] != (cfg.image_size,) * 2:
      # NOTE: as the original, whose position tables are sized by the build size.
      raise ValueError(f'This model is built for {cfg.image_size}x{cfg.image_size} inputs; got '
                       f'{inputs.shape[1:3]}. Build it for that size (image_size=...).')
    drop_rates = np.linspace(0.0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
    ends = np.cumsum([0, *cfg.depths])
    rates = [tuple(drop_rates[ends[i]:ends[i + 1]]) for i in range(len(cfg.depths))]
    if cfg.layout == 'pvt':
      return self._pvt(inputs.astype(cfg.dtype), rates, train, features_only)
    x = _PatchEmbed(cfg, name='patch_embed')(inputs.astype(cfg.dtype))
    features = []
    for stage in range(len(cfg.depths)):
      grid = tuple(x.shape[1:3])
      out, x = Stage(stage, grid, rates[stage], cfg, name=f'layers_{stage}')(x, train)
      features.append(out)
    if features_only:
      return features
    tokens = out.reshape(out.shape[0], -1, out.shape[-1])
    tokens = _norm(cfg, 'norm')(tokens)
    pooled = conv_layers.global_average(tokens).astype(cfg.dtype)
    return layers.Dense(cfg.num_classes, cfg.dtype, cfg.param_dtype, name='head')(
        pooled).astype(jnp.float32)

  def _pvt(self, images: Array, rates, train: bool, features_only: bool):
    """LIT-Ti: PVT's stages, position embeddings, the class token in stage 4."""
    cfg = self.cfg
    batch = images.shape[0]
    features, x = [], images
    for stage, dim in enumerate(cfg.embed_dims):
      name = f'patch_embed{stage + 1}'
      if stage == 0:
        x = _PatchEmbed(cfg, epsilon=1e-5, name=name)(images)
      else:
        x = DeformableTokenMerging(dim, cfg, name=name)(x, train)
      grid = tuple(x.shape[1:3])
      tokens = x.reshape(batch, -1, dim)
      prefix = 0
      if stage == len(cfg.embed_dims) - 1:
        cls = self.param('cls_token', layers.trunc_normal_init, (1, 1, dim), cfg.param_dtype)
        tokens = jnp.concatenate([jnp.broadcast_to(cls.astype(tokens.dtype), (batch, 1, dim)),
                                  tokens], axis=1)
        prefix = 1
      pos = self.param(f'pos_embed{stage + 1}', layers.trunc_normal_init,
                       (1, tokens.shape[1], dim), cfg.param_dtype)
      tokens = tokens + pos.astype(tokens.dtype)
      for j, rate in enumerate(rates[stage]):
        tokens = Block(dim, cfg.num_heads[stage], cfg.mlp_ratios[stage], stage, grid, rate,
                       cfg, name=f'block{stage + 1}_{j}')(tokens, train)
      x = tokens[:, prefix:].reshape(batch, *grid, dim)
      features.append(x)
    if features_only:
      return features
    tokens = _norm(cfg, 'norm')(tokens)
    return layers.Dense(cfg.num_classes, cfg.dtype, cfg.param_dtype, name='head')(
        tokens[:, 0]).astype(jnp.float32)


class _PatchEmbed(nn.Module):
  """A 4x4 stride-4 conv and a layer norm over its tokens; NHWC out."""
  cfg: LITConfig
  epsilon: float | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.cfg
    x = conv_layers.conv(cfg.embed_dims[0], 4, 4, 0, dtype=cfg.dtype,
                         param_dtype=cfg.param_dtype, name='proj', fan_in=3 * 16)(x)
    return _norm(cfg, 'norm', self.epsilon)(x)
