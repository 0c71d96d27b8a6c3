"""Kernels for XLA:CPU: the same math as the portable kernels, shaped for its compiler.

Every function here exists because of how XLA:CPU in jax 0.10 fuses and lowers the
portable formulation; `ops` uses them only in programs lowered for the CPU. They are
measured choices (docs/kernels.md), to be re-measured on a jax upgrade.
"""

import functools
import itertools

import jax
import jax.numpy as jnp

from mvitv2_jax.ops import linear
from mvitv2_jax.ops import norm as portable_norm

Array = jax.Array


# --- Pooling as strided slices ---------------------------------------------------------
# XLA:CPU lowers the windowed ops (grouped conv_general_dilated, reduce_window and their
# gradients) to generic loops; an elementwise combination of strided slices fuses into one.


def _pool_taps(x: Array, strides: tuple[int, ...], kernel: tuple[int, ...],
               fill: float) -> list[Array]:
  """The strided windows of pooling x [B, *spatial, C] with PyTorch's padding (k // 2).

  Tap t (window offsets in row-major order) holds, at every output position, the input
  at that offset of its window (`fill` outside the map): [B, *out, C] each.
  """
  pads = [k // 2 for k in kernel]
  batch, *spatial, channels = x.shape
  out = [(n + 2 * p - k) // s + 1 for n, p, k, s in zip(spatial, pads, kernel, strides)]
  x = jnp.pad(x, ((0, 0), *((p, p) for p in pads), (0, 0)), constant_values=fill)
  return [jax.lax.slice(x, (0, *offsets, 0),
                        (batch, *(o + (m - 1) * s + 1 for o, m, s in zip(offsets, out, strides)),
                         channels),
                        (1, *strides, 1))
          for offsets in itertools.product(*map(range, kernel))]


def _gather_taps(grad: Array, input_shape: tuple[int, ...], strides: tuple[int, ...],
                 kernel: tuple[int, ...]) -> list[Array]:
  """The transpose of `_pool_taps`, as one view of the output gradient per tap.

  View t holds, at each input position, the gradient of the output window that read it
  as its tap t, or zero if none did. All views slice one padded copy of `grad` (stride - 1
  zeros between entries): scattering each tap back would write one padded map per tap.
  """
  batch, *spatial, channels = input_shape
  out = grad.shape[1:-1]
  config = [(0, 0, 0)]
  for n, m, k, s in zip(spatial, out, kernel, strides):
    pad = k // 2
    config.append((k - 1 - pad, n + pad - (m - 1) * s - 1, s - 1))
  config.append((0, 0, 0))
  padded = jax.lax.pad(grad, jnp.zeros((), grad.dtype), config)
  # Input index y met tap offset i in output index (y + pad - i) / s: padded index y + k-1-i.
  return [jax.lax.slice(padded, (0, *(k - 1 - o for k, o in zip(kernel, offsets)), 0),
                        (batch, *(k - 1 - o + n for k, o, n in zip(kernel, offsets, spatial)),
                         channels))
          for offsets in itertools.product(*map(range, kernel))]


def _weighted_sum(taps: list[Array], weights: Array) -> Array:
  """Sum of tap t times the t-th kernel entry ([*kernel, 1, C]), accumulated in float32.

  The float32 accumulation is free inside the fusion and makes bf16 match a conv's.
  """
  weights = weights.astype(jnp.float32).reshape(-1, weights.shape[-1])
  return sum(tap.astype(jnp.float32) * weights[t] for t, tap in enumerate(taps))


def _reduced_weighted_sum(taps: list[Array], weights: Array) -> Array:
  """`_weighted_sum` as one reduction over the stacked taps: XLA writes its output out
  rather than fusing the sum into every consumer."""
  weights = weights.astype(jnp.float32).reshape(-1, weights.shape[-1])
  stacked = jnp.stack([tap.astype(jnp.float32) for tap in taps], axis=-2)
  return jnp.sum(stacked * weights, axis=-2)


def _one_loop(x: Array) -> Array:
  """`x`, through an identity select (NaN in, NaN out) that YNNPACK fusions do not take.

  Without it YNNPACK pulls the sum of the taps into the next layer norm's fusion, and
  XLA writes out every tap first.
  """
  return jnp.where(x == x, x, jnp.nan)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_pool(x: Array, weights: Array, strides: tuple[int, ...]) -> Array:
  """Depthwise conv pooling (kernel `weights` [*kernel, 1, C], padding k // 2) as slices.

  Same products and sums as the conv, in another order. The custom gradient keeps only
  `x` for the backward pass, where automatic differentiation would keep every tap.
  """
  kernel = weights.shape[:-2]
  taps = _pool_taps(x, strides, kernel, 0.0)
  # A wide kernel's fused sum is recomputed inside each tap's weight-gradient fusion.
  sum_taps = _reduced_weighted_sum if max(kernel) > 3 else _weighted_sum
  return _one_loop(sum_taps(taps, weights)).astype(x.dtype)


def _depthwise_pool_fwd(x, weights, strides):
  return depthwise_pool(x, weights, strides), (x, weights)


def _tap_weight_grads(taps: list[Array], grad: Array) -> Array:
  """Sum over images and positions of each tap times `grad`: [taps, C] in float32.

  Images are summed elementwise, `unroll` at a time, into one [B / unroll, *out, taps, C]
  stack that is reduced once: one reduction per tap made XLA write out every tap.
  """
  batch = grad.shape[0]
  # A batch with no divisor from 2 to 8 (e.g. 11) gets unroll 1: the full-size stack.
  unroll = max(d for d in range(1, min(batch, 8) + 1) if batch % d == 0)
  groups = lambda a: a.astype(jnp.float32).reshape(unroll, batch // unroll, *a.shape[1:])
  grad = groups(grad)
  partial = jnp.stack([sum(tap[i] * grad[i] for i in range(unroll))
                       for tap in map(groups, taps)], axis=-2)
  return jnp.sum(partial, axis=tuple(range(partial.ndim - 2)))


def _depthwise_pool_bwd(strides, residuals, grad_out):
  x, weights = residuals
  kernel = weights.shape[:-2]
  grad_f32 = grad_out.astype(jnp.float32)
  # Taps recomputed from a barrier's output: on `x` itself CSE would merge them with the
  # forward's and keep every tap alive from the forward pass.
  taps = _pool_taps(jax.lax.optimization_barrier(x), strides, kernel, 0.0)
  grad_weights = _tap_weight_grads(taps, grad_f32)
  grad_x = _weighted_sum(_gather_taps(grad_f32, x.shape, strides, kernel), weights)
  return grad_x.astype(x.dtype), grad_weights.reshape(weights.shape).astype(weights.dtype)


depthwise_pool.defvjp(_depthwise_pool_fwd, _depthwise_pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x: Array, strides: tuple[int, ...], kernel: tuple[int, ...]) -> Array:
  """Max pooling (-inf padding, k // 2) as the max of its taps.

  The gradient goes to the first maximum of each window in row-major order, as in
  PyTorch and XLA's `reduce_window` gradient (a chain of `maximum`s would split ties);
  the backward pass keeps only that tap's index.
  """
  return _max_and_first_max(x, strides, kernel)[0]  # XLA drops the unused index.


def _max_and_first_max(x, strides, kernel) -> tuple[Array, Array]:
  """Each window's max and the int8 index of its first maximum tap."""
  taps = _pool_taps(x, strides, kernel, -jnp.inf)
  out, first_max = taps[0], jnp.zeros(taps[0].shape, jnp.int8)
  for t, tap in enumerate(taps[1:], 1):
    larger = tap > out  # Strictly: ties keep the earlier tap.
    out, first_max = jnp.where(larger, tap, out), jnp.where(larger, jnp.int8(t), first_max)
  return out, first_max


def _max_pool_fwd(x, strides, kernel):
  out, first_max = _max_and_first_max(x, strides, kernel)
  return out, (first_max, x.shape)


def _max_pool_bwd(strides, kernel, residuals, grad_out):
  first_max, input_shape = residuals
  views = zip(_gather_taps(grad_out, input_shape, strides, kernel),
              _gather_taps(first_max, input_shape, strides, kernel))
  # Padding reads index 0 next to gradient 0: harmless for tap 0.
  return (sum(jnp.where(index == t, grad, 0) for t, (grad, index) in enumerate(views)),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


# --- Layer norm with its textbook gradient ---------------------------------------------
# With the traced gradient of mean and variance, XLA:CPU fused the residual stream's
# gradient (a sum over all later blocks) into each block's consumers and recomputed it.


def layer_norm(x: Array, scale: Array, bias: Array,
               epsilon: float = portable_norm.EPSILON) -> Array:
  """`ops.layer_norm` (float32 out) with a hand-written gradient."""
  return _layer_norm(x, scale, bias, float(epsilon))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x: Array, scale: Array, bias: Array, epsilon: float) -> Array:
  return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
  mean, rstd = portable_norm.moments(x, epsilon)
  return portable_norm.normalize(x, mean, rstd, scale, bias), (x, mean, rstd, scale)


def _layer_norm_bwd(epsilon, residuals, grad):
  del epsilon  # Folded into rstd.
  # Two row means for the input, two column sums for the params.
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


# --- Dense layers on 2-D tokens ---------------------------------------------------------


def dense(x: Array, kernel: Array, bias: Array) -> Array:
  """`ops.dense` on x flattened to [rows, C_in].

  On [B, N, C] XLA:CPU copies the activation into a transposed layout before the weight
  gradient's matmul; on the 2-D view that gradient is a plain xᵀ·dy GEMM.
  """
  y = linear.dense(x.reshape(-1, x.shape[-1]), kernel, bias)
  return y.reshape(*x.shape[:-1], y.shape[-1])
