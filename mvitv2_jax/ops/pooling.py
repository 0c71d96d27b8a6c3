"""Pooling over the spatial axes of [B, *spatial, C] with XLA's windowed ops.

Padding is PyTorch's for every pooling layer of MViT: kernel // 2 on both sides of
each axis, so the output length is ceil(n / stride) for kernels of stride + 1 or 3.
"""

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def _padding(kernel: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
  # Explicit and symmetric: 'SAME' would pad strided windows asymmetrically.
  return tuple((k // 2, k // 2) for k in kernel)


def depthwise_conv(x: Array, weights: Array, strides: tuple[int, ...]) -> Array:
  """Depthwise conv (`feature_group_count` = C) with kernel `weights` [*kernel, 1, C]."""
  axes = 'DHW'[-(x.ndim - 2):]
  return jax.lax.conv_general_dilated(
      x, weights.astype(x.dtype), strides, _padding(weights.shape[:-2]),
      dimension_numbers=(f'N{axes}C', f'{axes}IO', f'N{axes}C'),
      feature_group_count=x.shape[-1])


def max_pool(x: Array, strides: tuple[int, ...], kernel: tuple[int, ...]) -> Array:
  """Max pooling with -inf padding, as PyTorch's MaxPool."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *kernel, 1), (1, *strides, 1),
                               ((0, 0), *_padding(kernel), (0, 0)))


def avg_pool(x: Array, strides: tuple[int, ...], kernel: tuple[int, ...]) -> Array:
  """Average pooling counting the zero padding, as PyTorch's AvgPool."""
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, *kernel, 1), (1, *strides, 1),
                                ((0, 0), *_padding(kernel), (0, 0)))
  return total / math.prod(kernel)
