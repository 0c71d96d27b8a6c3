"""MViTv2 (Li et al., "MViTv2: Improved Multiscale Vision Transformers for
Classification and Detection", CVPR 2022) as flax.linen modules.

Numerically this follows the official `facebookresearch/mvit` model (HEAD dfbdfdf):
pooling attention with conv-pooled and normalised q/k/v, decomposed relative
positions from the pooled unscaled q, residual pooling, max-pooled skip path.
Parameter names mirror the official state dict (`blocks_3/attn/qkv`, ...) so the
converter is a short table.

Layout: images and feature maps are NHWC; tokens are row-major over the grid with
the class token (if any) first. Inside attention, q/k/v stay [B, N, heads, head_dim]
so no transposes are needed between the qkv projection, pooling and the output.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvitv2_jax import ops
from mvitv2_jax.model import layers
from mvitv2_jax.model import rel_pos
from mvitv2_jax.model import stacking
from mvitv2_jax.model.config import BlockSpec, MViTv2Config, block_runs, block_specs, pooled_grid

Array = jax.Array


class MultiScaleAttention(nn.Module):
  """Pooling attention with decomposed rel-pos and residual pooling."""
  cfg: MViTv2Config
  spec: BlockSpec

  @nn.compact
  def __call__(self, x: Array, grid: tuple[int, ...]) -> Array:
    """x [B, N, dim_in] normalised, on `grid` -> [B, N', att_dim] on the pooled q grid."""
    cfg, spec = self.cfg, self.spec
    heads, dim = spec.num_heads, spec.att_dim
    head_dim = dim // heads
    batch = x.shape[0]
    num_prefix = 1 if cfg.cls_token else 0
    qkv = layers.Dense(3 * dim, cfg.dtype, cfg.param_dtype, name='qkv')(x)
    # [B, N, 3*dim]; channels [q | k | v], each head-major.
    prefix, spatial = qkv[:, :num_prefix], qkv[:, num_prefix:]
    spatial = spatial.reshape(batch, *grid, 3 * dim)

    kernel = (cfg.pool_kernel,) * 2
    if cfg.pool_mode == 'conv':
      # One kernel per q/k/v shared by all heads: tiled over heads, the pooling is a
      # depthwise conv on the [B, H, W, heads*head_dim] map as it is.
      weights = [jnp.tile(self.param(name, layers.torch_conv_init, (*kernel, 1, head_dim),
                                     cfg.param_dtype), (1, 1, 1, heads))
                 for name in ('pool_q', 'pool_k', 'pool_v')]
    else:
      weights = [None] * 3
    pool = functools.partial(ops.pool, mode=cfg.pool_mode, kernel=kernel, impl=cfg.pool_impl)
    join = lambda ws: None if ws[0] is None else jnp.concatenate(ws, axis=-1)
    if spec.q_stride == spec.kv_stride:  # q, k and v in one call.
      pooled = pool(spatial, strides=(spec.q_stride,) * 2, weights=join(weights))
      pooled_q, pooled_kv = jnp.split(pooled, [dim], -1)
    else:
      # Split, not two slices: the gradient of a split is one concatenate.
      spatial_q, spatial_kv = jnp.split(spatial, [dim], -1)
      pooled_q = pool(spatial_q, strides=(spec.q_stride,) * 2, weights=weights[0])
      pooled_kv = pool(spatial_kv, strides=(spec.kv_stride,) * 2, weights=join(weights[1:]))
    q_grid, k_grid = pooled_q.shape[1:3], pooled_kv.shape[1:3]

    def tokens(pooled, prefix_part):  # -> [B, N', heads, head_dim], prefix first.
      pooled = pooled.reshape(batch, -1, heads, head_dim)
      return jnp.concatenate([prefix_part.reshape(batch, num_prefix, heads, head_dim), pooled], 1)

    pre_q, pre_k, pre_v = jnp.split(prefix, 3, axis=-1)
    pooled_k, pooled_v = jnp.split(pooled_kv, 2, axis=-1)
    q, k, v = tokens(pooled_q, pre_q), tokens(pooled_k, pre_k), tokens(pooled_v, pre_v)
    if cfg.pool_mode == 'conv':  # The original normalises only conv-pooled tensors.
      norm = functools.partial(layers.LayerNorm, cfg.dtype, cfg.param_dtype)
      q, k, v = norm(name='norm_q')(q), norm(name='norm_k')(k), norm(name='norm_v')(v)

    tables = [self.param(name, layers.trunc_normal_init, (spec.rel_pos_len, head_dim),
                         cfg.param_dtype) for name in ('rel_pos_h', 'rel_pos_w')]
    rel_terms = rel_pos.rel_pos_terms(q[:, num_prefix:], q_grid, k_grid, tables)
    out = ops.attention(q, k, v, rel_terms, k_grid=k_grid, num_prefix=num_prefix,
                        impl=cfg.attention_impl)

    # Residual pooling. NOTE: the official model skips the cls row (see cls_residual_q).
    if num_prefix and not cfg.cls_residual_q:
      out = out + q.at[:, :num_prefix].set(0)
    else:
      out = out + q
    out = out.reshape(batch, -1, dim)  # Head-major channels, as the original merges them.
    return layers.Dense(dim, cfg.dtype, cfg.param_dtype, name='proj')(out)


class MultiScaleBlock(nn.Module):
  """Pre-norm block: pooling attention and MLP, with the original's skip paths.

  `grid` is the token grid entering the block; it leaves as `pooled_grid(grid, q_stride)`.
  """
  cfg: MViTv2Config
  spec: BlockSpec
  grid: tuple[int, ...]
  train: bool = False

  @nn.compact
  def __call__(self, x: Array, drop_rate: Array | None = None) -> Array:
    """x [B, N, dim_in] -> [B, N', dim_out]; `drop_rate` overrides the spec's (scanned runs)."""
    cfg, spec = self.cfg, self.spec
    norm = functools.partial(layers.LayerNorm, cfg.dtype, cfg.param_dtype)
    proj = functools.partial(layers.Dense, spec.dim_out, cfg.dtype, cfg.param_dtype, name='proj')
    drop_path = lambda branch: layers.DropPath(spec.drop_path)(branch, self.train, drop_rate)
    widens = spec.dim_in != spec.dim_out

    x_norm = norm(name='norm1')(x)
    attn = MultiScaleAttention(cfg, spec, name='attn')(x_norm, self.grid)
    # NOTE: the skip reads the *normalised* input when it is projected, the raw one otherwise.
    skip = proj()(x_norm) if widens and cfg.dim_mul_in_att else x
    if spec.q_stride > 1:
      skip = self._max_pool_tokens(skip)
    x = skip + drop_path(attn)

    x_norm = norm(name='norm2')(x)
    mlp = layers.Mlp(int(spec.att_dim * cfg.mlp_ratio), spec.dim_out, cfg.dtype,
                     cfg.param_dtype, name='mlp')(x_norm)
    if widens and not cfg.dim_mul_in_att:
      x = proj()(x_norm)  # MViTv2-L layout: the MLP skip is projected from norm2's output.
    return x + drop_path(mlp)

  def _max_pool_tokens(self, x: Array) -> Array:
    """Max-pools the spatial tokens (kernel stride+1, -inf padding); the cls token bypasses."""
    num_prefix = 1 if self.cfg.cls_token else 0
    stride = self.spec.q_stride
    spatial = x[:, num_prefix:].reshape(x.shape[0], *self.grid, x.shape[-1])
    pooled = ops.pool(spatial, 'max', kernel=(stride + 1,) * 2, strides=(stride,) * 2,
                      impl=self.cfg.pool_impl)
    pooled = pooled.reshape(x.shape[0], -1, x.shape[-1])
    return jnp.concatenate([x[:, :num_prefix], pooled], axis=1)


class _ScanStep(MultiScaleBlock):
  """One block as an `nn.scan` step: (x, drop rate) -> (x, nothing)."""

  def __call__(self, x: Array, drop_rate: Array) -> tuple[Array, None]:
    return super().__call__(x, drop_rate), None


def _block_modules(cfg: MViTv2Config):
  """The block module and the scanned-run module, rematerialised as `cfg` asks."""
  block, step = MultiScaleBlock, _ScanStep
  if cfg.remat:
    policy = getattr(jax.checkpoint_policies, cfg.remat_policy) if cfg.remat_policy else None
    block = nn.remat(block, policy=policy)
    # Inside a scan CSE cannot merge the recomputation with the forward pass.
    step = nn.remat(step, policy=policy, prevent_cse=False)
  run = nn.scan(step, variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
                in_axes=0)
  return block, run


class MViTv2(nn.Module):
  """MViTv2 classifier.

  `__call__(images, train=False)` maps normalised NHWC images [B, H, W, 3] to float32
  logits [B, num_classes]. With `features_only=True` it returns the four stage outputs
  as NHWC maps (strides 4, 8, 16, 32; class token dropped) for dense-prediction heads.
  """
  cfg: MViTv2Config

  @nn.compact
  def __call__(self, images: Array, train: bool = False, features_only: bool = False):
    cfg = self.cfg
    specs = block_specs(cfg)
    pad = cfg.patch_padding
    x = nn.Conv(cfg.embed_dim, (cfg.patch_kernel,) * 2, strides=(cfg.patch_stride,) * 2,
                padding=((pad, pad), (pad, pad)), dtype=cfg.dtype,
                param_dtype=cfg.param_dtype, kernel_init=layers.torch_conv_init,
                bias_init=layers.torch_conv_bias_init(3 * cfg.patch_kernel**2),
                name='patch_embed')(images.astype(cfg.dtype))
    batch, grid = x.shape[0], tuple(x.shape[1:3])
    x = x.reshape(batch, -1, cfg.embed_dim)
    num_prefix = 1 if cfg.cls_token else 0
    if cfg.cls_token:
      cls = self.param('cls_token', layers.trunc_normal_init, (1, 1, cfg.embed_dim),
                       cfg.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, cfg.embed_dim)), x], 1)

    block, scanned_run = _block_modules(cfg)
    stage_ends = set((np.cumsum(cfg.depths) - 1).tolist())
    features = []
    for run in block_runs(cfg, specs):
      spec = specs[run[0]]
      if len(run) == 1:
        x = block(cfg, spec, grid, train, name=stacking.run_name(run))(x)
      else:
        rates = jnp.asarray([specs[i].drop_path for i in run], jnp.float32)
        x, _ = scanned_run(cfg, spec, grid, train, name=stacking.run_name(run))(x, rates)
      grid = pooled_grid(grid, spec.q_stride)
      if features_only and run[-1] in stage_ends:
        features.append(x[:, num_prefix:].reshape(batch, *grid, x.shape[-1]))
    if features_only:
      return features

    x = layers.LayerNorm(cfg.dtype, cfg.param_dtype, name='norm')(x)
    x = x[:, 0] if cfg.cls_token else x.mean(axis=1)
    x = nn.Dropout(cfg.head_dropout_rate, deterministic=not train)(x)
    # NOTE: the official head applies softmax in eval mode; we always return logits.
    logits = nn.Dense(cfg.num_classes, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                      kernel_init=layers.trunc_normal_init, name='head')(x)
    return logits.astype(jnp.float32)
