"""MViTv2 (Li et al., "MViTv2: Improved Multiscale Vision Transformers for
Classification and Detection", CVPR 2022) as flax.linen modules.

Numerically this follows the official `facebookresearch/mvit` model (HEAD dfbdfdf):
pooling attention with conv-pooled and normalised q/k/v, decomposed relative
positions from the pooled unscaled q, residual pooling, max-pooled skip path.
Parameter names mirror the official state dict (`blocks_3/attn/qkv`, ...) so the
converter in `convert.py` is a short table.

Layout: images and feature maps are NHWC; tokens are row-major over the grid with
the class token (if any) first. Inside attention, q/k/v stay [B, N, heads, head_dim]
so no transposes are needed between the qkv projection, pooling and the output.
"""

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvitv2_jax import rel_pos

Array = jax.Array

# PyTorch's trunc_normal_(std=0.02) truncates at +-2 absolute, i.e. at +-100 std:
# effectively an untruncated normal. Linear weights, rel-pos tables and cls token.
trunc_normal_init = nn.initializers.truncated_normal(stddev=0.02, lower=-100.0, upper=100.0)
# PyTorch's default conv init (kaiming_uniform, a=sqrt(5)): U(+-1/sqrt(fan_in)).
_torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def _torch_conv_bias_init(fan_in: int):
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


@dataclasses.dataclass(frozen=True)
class MViTv2Config:
  """Architecture of one MViTv2 variant (defaults: MViTv2-S)."""
  embed_dim: int = 96
  depths: Sequence[int] = (1, 2, 11, 2)
  num_heads: int = 1  # Heads in stage 1; doubled at each later stage.
  num_classes: int = 1000
  image_size: int = 224  # Build size: fixes the rel-pos table lengths.
  # True: the stage-entry block widens in attention (T/S/B/H, *-cls). False: the last
  # block of each stage widens in its MLP (the released MViTv2-L ImageNet-1K weights).
  dim_mul_in_att: bool = True
  cls_token: bool = False
  # Cls variants only. False: residual pooling skips the cls row (official HEAD).
  # True: it adds the pooled q to the cls row too (timm, official before Aug 2022).
  cls_residual_q: bool = False
  mlp_ratio: float = 4.0
  patch_kernel: int = 7
  patch_stride: int = 4
  patch_padding: int = 3
  pool_kernel: int = 3
  pool_mode: str = 'conv'  # 'conv' (MViTv2), or 'avg' / 'max' (paper ablations).
  kv_stride: int = 4  # Initial kv stride; divided by the q stride at each stage entry.
  drop_path_rate: float = 0.0
  head_dropout_rate: float = 0.0
  dtype: Any = jnp.float32  # Compute dtype.
  param_dtype: Any = jnp.float32
  remat: bool = False  # Rematerialise each block in the backward pass (saves memory).
  # With remat: a `jax.checkpoint_policies` name saying what each block keeps, e.g.
  # 'dots_with_no_batch_dims_saveable' (keep the Dense outputs, recompute the rest:
  # most of the memory saved for little recompute). '' recomputes everything.
  remat_policy: str = ''
  # Attention kernel: 'einsum' (explicit logits and softmax), 'dot_product'
  # (`jax.nn.dot_product_attention` with the rel-pos term as its bias; fused cuDNN
  # attention on GPU) or 'auto' (the faster of the two on the default backend).
  attention_impl: str = 'auto'
  # Depthwise and max pooling: 'conv' (XLA's windowed ops: `conv_general_dilated` with
  # feature groups, `reduce_window`), 'slices' (elementwise over the k*k strided
  # slices of each window; same math, 5-50x faster on XLA:CPU, see `_pool_taps`) or
  # 'auto' (slices on CPU, conv elsewhere).
  pool_impl: str = 'auto'


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """Static shape plan of one block, as the original builds it."""
  dim_in: int
  dim_out: int
  att_dim: int
  num_heads: int
  q_stride: int
  kv_stride: int
  rel_pos_len: int  # From the build size; 0 when rel-pos tables are unused.
  drop_path: float


def block_specs(cfg: MViTv2Config) -> list[BlockSpec]:
  """Per-block dims, heads, strides and rel-pos table lengths of `cfg`."""
  depth = sum(cfg.depths)
  stage_entries = set(np.cumsum(cfg.depths)[:-1].tolist())  # Blocks with q stride 2.
  stage_of = np.cumsum([i in stage_entries for i in range(depth + 1)])
  drop_rates = np.linspace(0.0, cfg.drop_path_rate, depth)
  size = cfg.image_size // cfg.patch_stride  # Token grid at the build size.
  kv_stride = cfg.kv_stride
  specs = []
  dim_in = cfg.embed_dim
  for i in range(depth):
    q_stride = 2 if i in stage_entries else 1
    # The adaptive kv stride shrinks before the strided block is built.
    kv_stride = max(kv_stride // q_stride, 1)
    heads = cfg.num_heads * 2**stage_of[i]
    if cfg.dim_mul_in_att:
      dim_out = att_dim = cfg.embed_dim * 2**stage_of[i]
    else:
      dim_out, att_dim = cfg.embed_dim * 2**stage_of[i + 1], dim_in
    specs.append(BlockSpec(
        dim_in=dim_in, dim_out=dim_out, att_dim=att_dim, num_heads=int(heads),
        q_stride=q_stride, kv_stride=kv_stride,
        rel_pos_len=rel_pos.table_length(size // q_stride, size // kv_stride),
        drop_path=float(drop_rates[i])))
    size //= q_stride
    dim_in = dim_out
  return specs


class TokenDense(nn.Dense):
  """`nn.Dense` over the last axis, applied to the tokens flattened to [B*N, C].

  Same params and math as `nn.Dense`. The reshape is free, but on [B, N, C] XLA:CPU
  computes the weight gradient by first copying the activation into a transposed
  layout (hundreds of ms per layer at 56x56 tokens); on the 2-D view it is a plain
  xᵀ·dy GEMM. MViTv2-S fp32 train step on CPU: ~25% faster.
  """

  def __call__(self, x: Array) -> Array:
    y = super().__call__(x.reshape(-1, x.shape[-1]))
    return y.reshape(*x.shape[:-1], y.shape[-1])


@jax.custom_vjp
def _layer_norm(x: Array, scale: Array, bias: Array) -> Array:
  """Layer norm over the last axis (eps 1e-6, two-pass variance), in float32."""
  return _layer_norm_fwd(x, scale, bias)[0]


def _layer_norm_fwd(x, scale, bias):
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, -1, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x32 - mean), -1, keepdims=True) + 1e-6)
  out = (x32 - mean) * (rstd * scale.astype(jnp.float32)) + bias.astype(jnp.float32)
  return out, (x, mean, rstd, scale)


def _layer_norm_bwd(residuals, grad):
  # The textbook layer-norm gradient: two row means for the input, two column sums for
  # the params. The traced gradient of the forward has more reductions, and with it
  # XLA:CPU fused the residual stream's gradient (a sum over all later blocks) into each
  # block's consumers, recomputing it there.
  x, mean, rstd, scale = residuals
  grad = grad.astype(jnp.float32)
  normed = (x.astype(jnp.float32) - mean) * rstd
  grad_normed = grad * scale.astype(jnp.float32)
  grad_x = rstd * (grad_normed - jnp.mean(grad_normed, -1, keepdims=True)
                   - normed * jnp.mean(grad_normed * normed, -1, keepdims=True))
  rows = tuple(range(x.ndim - 1))
  return (grad_x.astype(x.dtype), jnp.sum(grad * normed, rows).astype(scale.dtype),
          jnp.sum(grad, rows).astype(scale.dtype))


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
  """`nn.LayerNorm(epsilon=1e-6, use_fast_variance=False)`: same params, same forward
  math, with a hand-written gradient (MViTv2-S fp32 train step on CPU: ~7% faster).
  Statistics in float32 whatever the input dtype, as Flax's."""
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (x.shape[-1],), self.param_dtype)
    return _layer_norm(x, scale, bias).astype(self.dtype)


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per sample."""
  rate: float

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return x * mask.astype(x.dtype) / jnp.asarray(keep, x.dtype)


def _resolve(impl: str, on_cpu: str, elsewhere: str) -> str:
  if impl != 'auto':
    return impl
  return on_cpu if jax.default_backend() == 'cpu' else elsewhere


def attention_impl(cfg: MViTv2Config) -> str:
  """The attention kernel `cfg` runs on the default backend.

  On XLA:CPU `jax.nn.dot_product_attention` lowers to the same einsums and softmax,
  with the bias cast to the compute dtype; it measured no faster there.
  """
  return _resolve(cfg.attention_impl, 'einsum', 'dot_product')


def pool_impl(cfg: MViTv2Config) -> str:
  """The depthwise pooling kernel `cfg` runs on the default backend."""
  return _resolve(cfg.pool_impl, 'slices', 'conv')


def _pad_for(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  # Explicit symmetric padding as in PyTorch; 'SAME' pads strided convs asymmetrically.
  return ((kernel // 2, kernel // 2), (kernel // 2, kernel // 2))


def _pool_taps(x: Array, stride: int, kernel: int, fill: float) -> list[Array]:
  """The k*k strided windows of pooling [B, H, W, C] with PyTorch's padding (k // 2).

  Tap i*k + j holds, for every output position, the input at offset (i, j) of its
  window (`fill` outside the map): [B, out_h, out_w, C] each. Pooling as an
  elementwise combination of taps fuses into one loop on XLA:CPU, where the windowed
  ops (grouped `conv_general_dilated`, `reduce_window` and their gradients) lower to
  slow generic loops: 5-50x slower on MViTv2-S shapes.
  """
  pad = kernel // 2
  batch, height, width, channels = x.shape
  out_h = (height + 2 * pad - kernel) // stride + 1
  out_w = (width + 2 * pad - kernel) // stride + 1
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=fill)
  return [jax.lax.slice(x, (0, i, j, 0),
                        (batch, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1,
                         channels),
                        (1, stride, stride, 1))
          for i in range(kernel) for j in range(kernel)]


def _gather_taps(grad: Array, input_shape: tuple[int, ...], stride: int,
                 kernel: int) -> list[Array]:
  """The transpose of `_pool_taps`, as k*k views of the output gradient.

  View i*k + j holds, at each input position, the gradient of the output window that
  read it as its tap (i, j), or zero if none did: summing each view times its tap's
  weight gives the input gradient. This gathers from one padded copy of `grad`
  (stride - 1 zeros between its entries) in a single loop, where scattering each tap
  back separately would write k*k padded maps.
  """
  pad = kernel // 2
  batch, height, width, channels = input_shape
  out_h, out_w = grad.shape[1:3]
  low = kernel - 1 - pad
  config = ((0, 0, 0),
            (low, height + pad - (out_h - 1) * stride - 1, stride - 1),
            (low, width + pad - (out_w - 1) * stride - 1, stride - 1),
            (0, 0, 0))
  padded = jax.lax.pad(grad, jnp.zeros((), grad.dtype), config)
  # Input row y met tap row i in output row (y + pad - i) / stride: padded row y + k-1-i.
  return [jax.lax.slice(padded, (0, kernel - 1 - i, kernel - 1 - j, 0),
                        (batch, kernel - 1 - i + height, kernel - 1 - j + width, channels))
          for i in range(kernel) for j in range(kernel)]


def _weighted_sum(taps: list[Array], weights: Array, kernel: int) -> Array:
  """Sum of tap i*k + j times weights[i, j, 0], accumulated in float32.

  The float32 accumulation is free inside the fusion and makes bf16 match a conv's.
  """
  weights = weights.astype(jnp.float32)
  return sum(tap.astype(jnp.float32) * weights[t // kernel, t % kernel, 0]
             for t, tap in enumerate(taps))


def _one_loop(x: Array) -> Array:
  """`x`, through a select that XLA:CPU's YNNPACK fusions do not take.

  Left alone, YNNPACK merged the sum of the taps into the next layer norm's fusion and
  had XLA write out each of the k*k taps first; behind a select, the taps, their sum and
  this select stay in one loop. The select is an identity (NaN in, NaN out).
  """
  return jnp.where(x == x, x, jnp.nan)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_slices(x: Array, weights: Array, stride: int, kernel: int) -> Array:
  """The depthwise conv of `spatial_pool` as the sum of its taps times the kernel.

  Same products and sums as the conv, in a different order: equal to fp32 rounding.
  The custom gradient keeps only `x` for the backward pass, where automatic
  differentiation would keep all k*k taps (9 copies of the map).
  """
  pooled = _weighted_sum(_pool_taps(x, stride, kernel, 0.0), weights, kernel)
  return _one_loop(pooled).astype(x.dtype)


def _depthwise_slices_fwd(x, weights, stride, kernel):
  return _depthwise_slices(x, weights, stride, kernel), (x, weights)


def _tap_weight_grads(taps: list[Array], grad: Array) -> Array:
  """Sum over images and positions of each tap times `grad`: [k*k, C] in float32.

  The images are summed in an unrolled elementwise sum, `unroll` at a time, into a
  [B / unroll, out_h, out_w, k*k, C] stack that is reduced once, so no tap is written
  out. With one reduction per tap, XLA wrote out each tap and then read it and `grad`
  again (MViTv2-S stage 3, batch 8: 10.4 -> 4.7 ms per pool).
  """
  batch = grad.shape[0]
  # A batch with no divisor from 2 to 8 (e.g. 11) gets unroll 1: the full-size stack.
  unroll = max(d for d in range(1, min(batch, 8) + 1) if batch % d == 0)
  groups = lambda a: a.astype(jnp.float32).reshape(unroll, batch // unroll, *a.shape[1:])
  grad = groups(grad)
  partial = jnp.stack([sum(tap[i] * grad[i] for i in range(unroll))
                       for tap in map(groups, taps)], axis=-2)
  return jnp.sum(partial, axis=(0, 1, 2))


def _depthwise_slices_bwd(stride, kernel, residuals, grad_out):
  x, weights = residuals
  grad_f32 = grad_out.astype(jnp.float32)
  # Recompute the taps from a barrier's output: on `x` itself XLA would merge them with
  # the forward's taps (CSE) and keep all nine alive from the forward pass.
  taps = _pool_taps(jax.lax.optimization_barrier(x), stride, kernel, 0.0)
  grad_weights = _tap_weight_grads(taps, grad_f32)
  grad_x = _weighted_sum(_gather_taps(grad_f32, x.shape, stride, kernel), weights, kernel)
  return grad_x.astype(x.dtype), grad_weights.reshape(weights.shape).astype(weights.dtype)


_depthwise_slices.defvjp(_depthwise_slices_fwd, _depthwise_slices_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_slices(x: Array, stride: int, kernel: int) -> Array:
  """Max pooling as the max of its taps (-inf padding).

  The gradient goes to the first maximum of each window in row-major order, as in
  PyTorch and XLA's `reduce_window` gradient (the automatic gradient of a chain of
  `maximum`s would split ties); the backward pass keeps only that tap's index.
  """
  return _max_and_first_max(x, stride, kernel)[0]  # XLA drops the unused index.


def _max_and_first_max(x: Array, stride: int, kernel: int) -> tuple[Array, Array]:
  """Each window's max and the int8 index of its first maximum tap."""
  taps = _pool_taps(x, stride, kernel, -jnp.inf)
  out, first_max = taps[0], jnp.zeros(taps[0].shape, jnp.int8)
  for t, tap in enumerate(taps[1:], 1):
    larger = tap > out  # Strictly: ties keep the earlier tap.
    out, first_max = jnp.where(larger, tap, out), jnp.where(larger, jnp.int8(t), first_max)
  return out, first_max


def _max_pool_slices_fwd(x, stride, kernel):
  out, first_max = _max_and_first_max(x, stride, kernel)
  return out, (first_max, x.shape)


def _max_pool_slices_bwd(stride, kernel, residuals, grad_out):
  first_max, input_shape = residuals
  views = zip(_gather_taps(grad_out, input_shape, stride, kernel),
              _gather_taps(first_max, input_shape, stride, kernel))
  # Padding reads index 0 next to gradient 0: harmless for tap 0.
  return (sum(jnp.where(index == t, grad, 0) for t, (grad, index) in enumerate(views)),)


_max_pool_slices.defvjp(_max_pool_slices_fwd, _max_pool_slices_bwd)


def spatial_pool(x: Array, stride: int, kernel: int, mode: str, weights: Array | None = None,
                 impl: str = 'conv') -> Array:
  """Pools [B, H, W, C] spatially with PyTorch's padding and output size (ceil(H/stride)).

  Args:
    x: [B, H, W, C].
    stride: pooling stride.
    kernel: window size.
    mode: 'conv' (depthwise conv with `weights` [k, k, 1, C]), 'avg' (zero padding
      counted, as PyTorch's AvgPool2d) or 'max' (-inf padding).
    weights: depthwise kernel for mode 'conv'.
    impl: for modes 'conv' and 'max': 'conv' (XLA's windowed ops: grouped
      `conv_general_dilated`, `reduce_window`) or 'slices' (`_pool_taps`, same math).

  Returns:
    [B, ceil(H/stride), ceil(W/stride), C].
  """
  if impl not in ('conv', 'slices'):
    raise ValueError(f"Unknown pool_impl {impl!r}; expected 'auto', 'conv' or 'slices'.")
  padding = _pad_for(kernel)
  if mode == 'conv':
    if impl == 'slices':
      return _depthwise_slices(x, weights, stride, kernel)
    return jax.lax.conv_general_dilated(
        x, weights.astype(x.dtype), (stride, stride), padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=x.shape[-1])
  window, strides = (1, kernel, kernel, 1), (1, stride, stride, 1)
  padding = ((0, 0),) + padding + ((0, 0),)
  if mode == 'max':
    if impl == 'slices':
      return _max_pool_slices(x, stride, kernel)
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, padding)
  if mode == 'avg':
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
    return total / (kernel * kernel)
  raise ValueError(f"Unknown pool_mode {mode!r}; expected 'conv', 'avg' or 'max'.")


def decomposed_rel_pos_bias(q: Array, q_grid: tuple[int, int], k_grid: tuple[int, int],
                            table_h: Array, table_w: Array) -> Array:
  """The decomposed relative-position term added to the attention logits.

  Args:
    q: pooled, normalised, unscaled spatial queries [B, qh*qw, heads, d].
    q_grid: (qh, qw).
    k_grid: (kh, kw).
    table_h: [R_h, d] table shared by all heads; likewise `table_w`.

  Returns:
    [B, heads, qh*qw, kh*kw] bias.
  """
  (qh, qw), (kh, kw) = q_grid, k_grid
  idx_h, idx_w = rel_pos.rel_pos_index(qh, kh), rel_pos.rel_pos_index(qw, kw)
  for idx, table, axis in ((idx_h, table_h, 'height'), (idx_w, table_w, 'width')):
    if idx.max() >= table.shape[0]:
      raise ValueError(
          f'Input too large for this model along {axis}: the rel-pos table has '
          f'{table.shape[0]} entries, the grid needs {idx.max() + 1}. Build the model with a '
          'larger image_size (converted tables are resized at load time).')
  r_h = table_h[idx_h].astype(q.dtype)  # [qh, kh, d]
  r_w = table_w[idx_w].astype(q.dtype)  # [qw, kw, d]
  q = q.reshape(q.shape[0], qh, qw, *q.shape[2:])  # [B, qh, qw, heads, d]
  rel_h = jnp.einsum('byxnc,ykc->bnyxk', q, r_h, preferred_element_type=jnp.float32)
  rel_w = jnp.einsum('byxnc,xlc->bnyxl', q, r_w, preferred_element_type=jnp.float32)
  bias = rel_h[..., :, None] + rel_w[..., None, :]  # [B, heads, qh, qw, kh, kw]
  return bias.reshape(*bias.shape[:2], qh * qw, kh * kw)


class MultiScaleAttention(nn.Module):
  """Pooling attention with decomposed rel-pos and residual pooling."""
  cfg: MViTv2Config
  spec: BlockSpec

  @nn.compact
  def __call__(self, x: Array, grid: tuple[int, int]) -> tuple[Array, tuple[int, int]]:
    cfg, spec = self.cfg, self.spec
    heads, dim = spec.num_heads, spec.att_dim
    head_dim = dim // heads
    dense = functools.partial(TokenDense, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                              kernel_init=trunc_normal_init)
    batch = x.shape[0]
    qkv = dense(3 * dim, name='qkv')(x)  # [B, N, 3*dim]; channels [q | k | v], head-major.
    num_prefix = 1 if cfg.cls_token else 0
    prefix, spatial = qkv[:, :num_prefix], qkv[:, num_prefix:]
    spatial = spatial.reshape(batch, *grid, 3 * dim)

    if cfg.pool_mode == 'conv':
      # One (k, k, 1, head_dim) kernel per q/k/v, shared by all heads: tile it over heads
      # so the pooling is a depthwise conv on the [B, H, W, heads*head_dim] map as is.
      kernels = [
          self.param(name, _torch_conv_init, (cfg.pool_kernel, cfg.pool_kernel, 1, head_dim),
                     cfg.param_dtype)
          for name in ('pool_q', 'pool_k', 'pool_v')]
      kernels = [jnp.tile(k, (1, 1, 1, heads)) for k in kernels]
    else:
      kernels = [None] * 3
    pool = functools.partial(spatial_pool, kernel=cfg.pool_kernel, mode=cfg.pool_mode,
                             impl=pool_impl(cfg))
    if spec.q_stride == spec.kv_stride:  # Pool q, k and v in one call.
      kernel = None if kernels[0] is None else jnp.concatenate(kernels, axis=-1)
      pooled_q, pooled_kv = jnp.split(pool(spatial, spec.q_stride, weights=kernel), [dim], -1)
    else:  # k and v share a stride: two calls.
      kernel_kv = None if kernels[1] is None else jnp.concatenate(kernels[1:], axis=-1)
      # Split, not two slices: the gradient of a split is one concatenate, where that of
      # the slices pads each part to full width and adds them (both pools' gradients
      # computed at every position: the block's pooling backward took 1.2-1.7x as long).
      spatial_q, spatial_kv = jnp.split(spatial, [dim], -1)
      pooled_q = pool(spatial_q, spec.q_stride, weights=kernels[0])
      pooled_kv = pool(spatial_kv, spec.kv_stride, weights=kernel_kv)
    q_grid, k_grid = pooled_q.shape[1:3], pooled_kv.shape[1:3]

    def tokens(pooled, prefix_part):  # -> [B, N', heads, head_dim], prefix first.
      pooled = pooled.reshape(batch, -1, heads, head_dim)
      return jnp.concatenate([prefix_part.reshape(batch, num_prefix, heads, head_dim), pooled], 1)

    pre_q, pre_k, pre_v = jnp.split(prefix, 3, axis=-1)
    pooled_k, pooled_v = jnp.split(pooled_kv, 2, axis=-1)
    q, k, v = tokens(pooled_q, pre_q), tokens(pooled_k, pre_k), tokens(pooled_v, pre_v)
    if cfg.pool_mode == 'conv':  # The original normalises only conv-pooled tensors.
      norm = functools.partial(LayerNorm, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
      q, k, v = norm(name='norm_q')(q), norm(name='norm_k')(k), norm(name='norm_v')(v)

    table_shape = (spec.rel_pos_len, head_dim)
    table_h = self.param('rel_pos_h', trunc_normal_init, table_shape, cfg.param_dtype)
    table_w = self.param('rel_pos_w', trunc_normal_init, table_shape, cfg.param_dtype)
    bias = decomposed_rel_pos_bias(q[:, num_prefix:], q_grid, k_grid, table_h, table_w)
    # Rel-pos covers only spatial x spatial logits: pad zeros for the cls row and column.
    bias = jnp.pad(bias, ((0, 0), (0, 0), (num_prefix, 0), (num_prefix, 0)))

    impl = attention_impl(cfg)
    if impl == 'dot_product':
      # Same layout [B, N, heads, d] in and out; on GPU this is fused cuDNN attention,
      # which takes the bias in the compute dtype.
      out = jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype),
                                         scale=head_dim**-0.5)
    elif impl == 'einsum':
      # The matmuls run head-major, [B, heads, N, d]: with the heads between the token and
      # channel axes, XLA:CPU ran stage 3's 196x196 attention 2-3x slower, transposes included.
      q_h, k_h, v_h = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))
      logits = jnp.einsum('bnqd,bnkd->bnqk', q_h * jnp.asarray(head_dim**-0.5, q.dtype), k_h,
                          preferred_element_type=jnp.float32)
      attn = jax.nn.softmax(logits + bias, axis=-1).astype(v.dtype)
      out = jnp.swapaxes(jnp.einsum('bnqk,bnkd->bnqd', attn, v_h), 1, 2)  # [B, Nq, heads, d]
    else:
      raise ValueError(f"Unknown attention_impl {cfg.attention_impl!r}; expected 'auto', "
                       "'einsum' or 'dot_product'.")

    # Residual pooling. NOTE: the official model skips the cls row (see cls_residual_q).
    if num_prefix and not cfg.cls_residual_q:
      out = out + q.at[:, :num_prefix].set(0)
    else:
      out = out + q
    out = out.reshape(batch, -1, dim)  # Head-major channels, as the original merges them.
    return dense(dim, name='proj')(out), tuple(q_grid)


def gelu(x: Array) -> Array:
  """Exact GELU written as PyTorch computes it, x * (1 + erf(x / sqrt(2))) / 2.

  `nn.gelu(approximate=False)` goes through erfc, which XLA:CPU evaluates with an exp
  and a division; on stage 1's hidden layer this form is 2.2x faster, its gradient 1.6x.
  """
  return x * (jax.lax.erf(x * np.asarray(2**-0.5, x.dtype)) + 1) * np.asarray(0.5, x.dtype)


class Mlp(nn.Module):
  hidden_dim: int
  out_dim: int
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    dense = functools.partial(TokenDense, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=trunc_normal_init)
    x = dense(self.hidden_dim, name='fc1')(x)
    return dense(self.out_dim, name='fc2')(gelu(x))


class MultiScaleBlock(nn.Module):
  """Pre-norm block: pooling attention and MLP, with the original's skip paths."""
  cfg: MViTv2Config
  spec: BlockSpec

  @nn.compact
  def __call__(self, x: Array, grid: tuple[int, int], train: bool) -> tuple[Array, tuple[int, int]]:
    cfg, spec = self.cfg, self.spec
    norm = functools.partial(LayerNorm, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    proj = functools.partial(TokenDense, spec.dim_out, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                             kernel_init=trunc_normal_init, name='proj')
    widens = spec.dim_in != spec.dim_out

    x_norm = norm(name='norm1')(x)
    attn, new_grid = MultiScaleAttention(cfg, spec, name='attn')(x_norm, grid)
    # NOTE: the skip reads the *normalised* input when it is projected, the raw one otherwise.
    skip = proj()(x_norm) if widens and cfg.dim_mul_in_att else x
    if spec.q_stride > 1:
      skip = self._max_pool_tokens(skip, grid)
    x = skip + DropPath(spec.drop_path)(attn, train)

    x_norm = norm(name='norm2')(x)
    mlp = Mlp(int(spec.att_dim * cfg.mlp_ratio), spec.dim_out, cfg.dtype, cfg.param_dtype,
              name='mlp')(x_norm)
    if widens and not cfg.dim_mul_in_att:
      x = proj()(x_norm)  # MViTv2-L layout: the MLP skip is projected from norm2's output.
    return x + DropPath(spec.drop_path)(mlp, train), new_grid

  def _max_pool_tokens(self, x: Array, grid: tuple[int, int]) -> Array:
    """Max-pools the spatial tokens (kernel stride+1, -inf padding); the cls token bypasses."""
    num_prefix = 1 if self.cfg.cls_token else 0
    stride = self.spec.q_stride
    spatial = x[:, num_prefix:].reshape(x.shape[0], *grid, x.shape[-1])
    pooled = spatial_pool(spatial, stride, stride + 1, 'max', impl=pool_impl(self.cfg))
    pooled = pooled.reshape(x.shape[0], -1, x.shape[-1])
    return jnp.concatenate([x[:, :num_prefix], pooled], axis=1)


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
    x = nn.Conv(cfg.embed_dim, (cfg.patch_kernel,) * 2, strides=(cfg.patch_stride,) * 2,
                padding=_pad_for(2 * cfg.patch_padding + 1), dtype=cfg.dtype,
                param_dtype=cfg.param_dtype, kernel_init=_torch_conv_init,
                bias_init=_torch_conv_bias_init(3 * cfg.patch_kernel**2),
                name='patch_embed')(images.astype(cfg.dtype))
    batch, grid = x.shape[0], tuple(x.shape[1:3])
    x = x.reshape(batch, -1, cfg.embed_dim)
    num_prefix = 1 if cfg.cls_token else 0
    if cfg.cls_token:
      cls = self.param('cls_token', trunc_normal_init, (1, 1, cfg.embed_dim), cfg.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, cfg.embed_dim)), x], 1)

    block = MultiScaleBlock
    if cfg.remat:
      policy = getattr(jax.checkpoint_policies, cfg.remat_policy) if cfg.remat_policy else None
      block = nn.remat(MultiScaleBlock, static_argnums=(2, 3), policy=policy)
    stage_ends = set((np.cumsum(cfg.depths) - 1).tolist())
    features = []
    for i, spec in enumerate(specs):
      x, grid = block(cfg, spec, name=f'blocks_{i}')(x, grid, train)
      if features_only and i in stage_ends:
        features.append(x[:, num_prefix:].reshape(batch, *grid, x.shape[-1]))
    if features_only:
      return features

    x = LayerNorm(dtype=cfg.dtype, param_dtype=cfg.param_dtype, name='norm')(x)
    x = x[:, 0] if cfg.cls_token else x.mean(axis=1)
    x = nn.Dropout(cfg.head_dropout_rate, deterministic=not train)(x)
    # NOTE: the official head applies softmax in eval mode; we always return logits.
    logits = nn.Dense(cfg.num_classes, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                      kernel_init=trunc_normal_init, name='head')(x)
    return logits.astype(jnp.float32)


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
# Drop-path rates of the official ImageNet-1K recipe; used for training configs.
DROP_PATH_RATES = {'mvitv2_t': 0.1, 'mvitv2_s': 0.1, 'mvitv2_b': 0.3, 'mvitv2_l': 0.5}


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
