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
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvitv2_jax import ops
from mvitv2_jax.models import layers
from mvitv2_jax.models.mvit import rel_pos
from mvitv2_jax.models.mvit import stacking
from mvitv2_jax.models.mvit.config import BlockSpec, MViTv2Config, block_runs, block_specs, pooled_grid

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

    kernel = cfg.per_axis(cfg.pool_kernel)
    names = ('pool_q', 'pool_k', 'pool_v') if spec.pool_q else ('pool_k', 'pool_v')
    if cfg.pool_mode == 'conv':
      # One kernel per q/k/v shared by all heads: tiled over heads, the pooling is a
      # depthwise conv on the [B, *grid, heads*head_dim] map as it is.
      weights = [jnp.tile(self.param(name, layers.torch_conv_init, (*kernel, 1, head_dim),
                                     cfg.param_dtype), (1,) * (len(kernel) + 1) + (heads,))
                 for name in names]
    else:
      weights = [None] * len(names)
    pool = functools.partial(ops.pool, mode=cfg.pool_mode, kernel=kernel, impl=cfg.pool_impl)
    join = lambda ws: None if ws[0] is None else jnp.concatenate(ws, axis=-1)
    if spec.pool_q and spec.q_stride == spec.kv_stride:  # q, k and v in one call.
      pooled = pool(spatial, strides=spec.q_stride, weights=join(weights))
      pooled_q, pooled_kv = jnp.split(pooled, [dim], -1)
    else:
      # Split, not two slices: the gradient of a split is one concatenate.
      pooled_q, spatial_kv = jnp.split(spatial, [dim], -1)
      if spec.pool_q:
        pooled_q = pool(pooled_q, strides=spec.q_stride, weights=weights[0])
      pooled_kv = pool(spatial_kv, strides=spec.kv_stride, weights=join(weights[-2:]))
    q_grid, k_grid = pooled_q.shape[1:-1], pooled_kv.shape[1:-1]

    def tokens(pooled, prefix_part):  # -> [B, N', heads, head_dim], prefix first.
      pooled = pooled.reshape(batch, -1, heads, head_dim)
      return jnp.concatenate([prefix_part.reshape(batch, num_prefix, heads, head_dim), pooled], 1)

    pre_q, pre_k, pre_v = jnp.split(prefix, 3, axis=-1)
    pooled_k, pooled_v = jnp.split(pooled_kv, 2, axis=-1)
    q, k, v = tokens(pooled_q, pre_q), tokens(pooled_k, pre_k), tokens(pooled_v, pre_v)
    if cfg.pool_mode == 'conv':  # The original normalises only conv-pooled tensors.
      norm = functools.partial(layers.LayerNorm, cfg.dtype, cfg.param_dtype)
      if spec.pool_q:
        q = norm(name='norm_q')(q)
      k, v = norm(name='norm_k')(k), norm(name='norm_v')(v)

    rel_terms = ()
    if spec.rel_pos_lens:
      axes = 'thw'[-len(q_grid):]
      tables = [self.param(f'rel_pos_{axis}', layers.trunc_normal_init, (length, head_dim),
                           cfg.param_dtype) for axis, length in zip(axes, spec.rel_pos_lens)]
      rel_terms = rel_pos.rel_pos_terms(q[:, num_prefix:], q_grid, k_grid, tables,
                                        interpolate=cfg.rel_pos_interpolate)
    out = ops.attention(q, k, v, rel_terms, k_grid=k_grid, num_prefix=num_prefix,
                        impl=cfg.attention_impl)

    # Residual pooling. NOTE: the official model skips the cls row (see cls_residual_q).
    if cfg.residual_pooling:
      out = out + (q.at[:, :num_prefix].set(0) if num_prefix and not cfg.cls_residual_q else q)
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
    if max(spec.q_stride) > 1:
      skip = self._max_pool_tokens(skip)
    x = skip + drop_path(attn)

    x_norm = norm(name='norm2')(x)
    mlp = layers.Mlp(int(spec.att_dim * cfg.mlp_ratio), spec.dim_out, cfg.dtype,
                     cfg.param_dtype, name='mlp')(x_norm)
    if widens and not cfg.dim_mul_in_att:
      x = proj()(x_norm)  # MViTv2-L layout: the MLP skip is projected from norm2's output.
    return x + drop_path(mlp)

  def _max_pool_tokens(self, x: Array) -> Array:
    """Max-pools the spatial tokens (kernel stride+1 on strided axes, -inf padding); the cls
    token bypasses."""
    num_prefix = 1 if self.cfg.cls_token else 0
    strides = self.spec.q_stride
    spatial = x[:, num_prefix:].reshape(x.shape[0], *self.grid, x.shape[-1])
    kernel = tuple(s + 1 if s > 1 else 1 for s in strides)
    pooled = ops.pool(spatial, 'max', kernel=kernel, strides=strides, impl=self.cfg.pool_impl)
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
  """MViT classifier for images or videos (MViTv2, and MViTv1 by configuration).

  `__call__(inputs, train=False)` maps normalised channels-last inputs, images
  [B, H, W, 3] or videos [B, T, H, W, 3] (`cfg.num_frames`), to float32 logits
  [B, num_classes]. With `features_only=True` it returns the four stage outputs as
  channels-last maps ([B, H', W', C] or [B, T', H', W', C]; class token dropped).
  """
  cfg: MViTv2Config

  @nn.compact
  def __call__(self, inputs: Array, train: bool = False, features_only: bool = False):
    cfg = self.cfg
    specs = block_specs(cfg)
    kernel = cfg.per_axis(cfg.patch_kernel)
    if inputs.ndim != len(kernel) + 2:
      raise ValueError(f'Expected {"videos [B, T, H, W, 3]" if cfg.num_frames else "images [B, H, W, 3]"}'
                       f', got shape {inputs.shape}.')
    x = nn.Conv(cfg.embed_dim, kernel, strides=cfg.per_axis(cfg.patch_stride),
                padding=tuple((p, p) for p in cfg.per_axis(cfg.patch_padding)), dtype=cfg.dtype,
                param_dtype=cfg.param_dtype, kernel_init=layers.torch_conv_init,
                bias_init=layers.torch_conv_bias_init(3 * math.prod(kernel)),
                name='patch_embed')(inputs.astype(cfg.dtype))
    batch, grid = x.shape[0], tuple(x.shape[1:-1])
    if (cfg.num_frames or cfg.abs_pos) and grid != cfg.patch_grid:
      # NOTE: as the original, these models run at their build size only.
      raise ValueError(f'This model is built for inputs of {cfg.input_size} (token grid '
                       f'{cfg.patch_grid}); got {inputs.shape[1:-1]}. Build it for that size '
                       '(converted position tables are resized at load time).')
    x = x.reshape(batch, -1, cfg.embed_dim)
    num_prefix = 1 if cfg.cls_token else 0
    if cfg.cls_token:
      cls = self.param('cls_token', layers.trunc_normal_init, (1, 1, cfg.embed_dim),
                       cfg.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, cfg.embed_dim)), x], 1)
    if cfg.abs_pos:
      x = x + self._position_embedding(grid).astype(x.dtype)

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

  def _position_embedding(self, grid: tuple[int, ...]) -> Array:
    """MViTv1's absolute position embedding [1, N, C] (class token first)."""
    cfg, dim = self.cfg, self.cfg.embed_dim
    num_prefix = 1 if cfg.cls_token else 0
    param = lambda name, length: self.param(name, layers.trunc_normal_init, (1, length, dim),
                                            cfg.param_dtype)
    if cfg.abs_pos == 'joint':
      return param('pos_embed', num_prefix + math.prod(grid))
    if cfg.abs_pos != 'separable' or len(grid) != 3:
      raise ValueError(f"Unknown abs_pos {cfg.abs_pos!r} for this model; expected '', 'joint' "
                       "or 'separable' (videos).")
    frames, area = grid[0], grid[1] * grid[2]
    # Token (t, y, x) gets spatial[y, x] + temporal[t].
    pos = (jnp.tile(param('pos_embed_spatial', area), (1, frames, 1))
           + jnp.repeat(param('pos_embed_temporal', frames), area, axis=1))
    if num_prefix:
      pos = jnp.concatenate([param('pos_embed_class', 1), pos], 1)
    return pos
