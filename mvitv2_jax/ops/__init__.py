"""The model's kernels: pooling, attention, layer norm and dense layers.

Each public op has a portable formulation (`pooling`, `softmax_attention`, `norm`, `linear`) and,
where XLA:CPU needs another shape of the same math, a CPU kernel (`cpu`). Which one a
program runs is fixed when it is lowered, for the platform it is lowered for
(`platform`); `impl` names a kernel explicitly.
"""

import jax

from mvitv2_jax.ops import softmax_attention
from mvitv2_jax.ops import cpu
from mvitv2_jax.ops import linear
from mvitv2_jax.ops import norm
from mvitv2_jax.ops import platform
from mvitv2_jax.ops import pooling

Array = jax.Array

POOL_MODES = ('conv', 'avg', 'max')


def pool(x: Array, mode: str, kernel: tuple[int, ...], strides: tuple[int, ...],
         weights: Array | None = None, impl: str = 'auto') -> Array:
  """Pools x [B, *spatial, C] with padding kernel // 2 per axis: [B, *ceil(spatial / strides), C].

  Args:
    x: the map.
    mode: 'conv' (depthwise conv with `weights` [*kernel, 1, C]), 'avg' (zero padding
      counted, as PyTorch's AvgPool) or 'max' (-inf padding).
    kernel: window size per spatial axis.
    strides: stride per spatial axis.
    weights: the depthwise kernel, for mode 'conv'.
    impl: 'auto', 'conv' (XLA's windowed ops) or 'slices' (strided slices, for XLA:CPU);
      modes 'conv' and 'max'.
  """
  kernel, strides = tuple(kernel), tuple(strides)
  if mode == 'conv':
    return platform.dispatch('pool', impl, {
        'conv': lambda x, w: pooling.depthwise_conv(x, w, strides),
        'slices': lambda x, w: cpu.depthwise_pool(x, w, strides),
    }, x, weights)
  if mode == 'max':
    return platform.dispatch('pool', impl, {
        'conv': lambda x: pooling.max_pool(x, strides, kernel),
        'slices': lambda x: cpu.max_pool(x, strides, kernel),
    }, x)
  if mode == 'avg':
    return pooling.avg_pool(x, strides, kernel)
  raise ValueError(f'Unknown pool mode {mode!r}; expected one of {", ".join(POOL_MODES)}.')


def attention(q: Array, k: Array, v: Array, rel_terms: tuple[Array, ...], *,
              k_grid: tuple[int, ...], num_prefix: int, impl: str = 'auto') -> Array:
  """softmax(q kᵀ / sqrt(d) + rel-pos) v for q, k, v [B, N, heads, d] (see `attention`).

  Args:
    q: queries [B, Nq, heads, d], unscaled.
    k: keys [B, Nk, heads, d].
    v: values [B, Nk, heads, d].
    rel_terms: the decomposed rel-pos term, per spatial axis a
      [B, heads, *q_grid, k_grid[a]] float32.
    k_grid: the spatial key grid.
    num_prefix: class tokens in front of the spatial tokens (no rel-pos term).
    impl: 'auto' or a kernel: 'einsum' (explicit logits and bias), 'dot_product'
      (`jax.nn.dot_product_attention` with the bias), or on q and k augmented so that
      no bias is needed: 'xla' (plain attention), 'cudnn' (cuDNN flash attention,
      bf16/fp16), 'pallas' (the Pallas TPU flash kernel).

  Returns:
    [B, Nq, heads, d] in v's dtype.
  """
  options = dict(k_grid=tuple(k_grid), num_prefix=num_prefix)
  return platform.dispatch('attention', impl, {
      'einsum': lambda *a: softmax_attention.einsum_attention(*a, **options),
      'dot_product': lambda *a: softmax_attention.dot_product_attention(*a, **options),
      'xla': lambda *a: softmax_attention.xla_attention(*a, **options),
      'cudnn': lambda *a: softmax_attention.cudnn_attention(*a, **options),
      'pallas': lambda *a: softmax_attention.pallas_attention(*a, **options),
  }, q, k, v, tuple(rel_terms))


def layer_norm(x: Array, scale: Array, bias: Array) -> Array:
  """Layer norm over the last axis (eps 1e-6, two-pass variance): float32 [..., C]."""
  return platform.on_cpu(x, scale, bias, cpu=cpu.layer_norm, default=norm.layer_norm)


def dense(x: Array, kernel: Array, bias: Array) -> Array:
  """x [..., C_in] @ kernel [C_in, C_out] + bias, in the inputs' dtype."""
  return platform.on_cpu(x, kernel, bias, cpu=cpu.dense, default=linear.dense)
