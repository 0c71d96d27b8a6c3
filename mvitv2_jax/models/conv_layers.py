"""Layers the convolutional-stem families (ResT, LIT) share: PyTorch's batch norm (and how
its state-dict entries convert), depthwise conv through `ops.pool`, and PyTorch's conv
initialisers.

MViT has none of these; its shared layers are in `layers.py`.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvitv2_jax import ops
from mvitv2_jax.models import layers

Array = jax.Array

BATCH_NORM_EPSILON = 1e-5  # PyTorch's BatchNorm2d default.
# Key-table rule: BatchNorm's running statistics fill the `batch_stats` collection.
BATCH_NORM_STATS = (r'\.running_(mean|var)$', 'batch_stats')
BATCH_NORM_MOMENTUM = 0.1  # PyTorch's: running = (1 - m) * running + m * batch.


torch_bias_init = layers.torch_conv_bias_init  # PyTorch's default bias, U(+-1/sqrt(fan_in)).


def check_num_batches_tracked(key: str, value: np.ndarray, cfg) -> str | None:
  """Key-table buffer check: BatchNorm's step counter, an integer scalar unused at inference."""
  del key, cfg
  if value.size == 1 and np.issubdtype(value.dtype, np.integer):
    return None
  return f'a {value.dtype} tensor of shape {value.shape}, not an integer counter'


class BatchNorm(nn.Module):
  """PyTorch's `BatchNorm2d` over the last axis of [B, ..., C], statistics in float32.

  Params `scale`, `bias`; collection `batch_stats` holds `mean` and `var` (PyTorch's
  `running_mean`, `running_var`). With `train` the batch's statistics normalise (biased
  variance) and, unless initialising, the running ones move by `momentum` towards the
  batch's with the unbiased variance, as PyTorch updates them; `batch_stats` must then be
  mutable. Under `jit` with a batch sharded over devices the statistics are those of the
  global batch (SyncBatchNorm's; PyTorch's plain BatchNorm uses each device's share).
  """
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  epsilon: float = BATCH_NORM_EPSILON
  momentum: float = BATCH_NORM_MOMENTUM

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (features,), self.param_dtype)
    running_mean = self.variable('batch_stats', 'mean',
                                 lambda: jnp.zeros((features,), jnp.float32))
    running_var = self.variable('batch_stats', 'var', lambda: jnp.ones((features,), jnp.float32))
    x32 = x.astype(jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)
      if not self.is_initializing():
        count = np.prod([x.shape[a] for a in axes])
        unbiased = var * (count / max(count - 1, 1))
        m = self.momentum
        running_mean.value = (1 - m) * running_mean.value + m * mean
        running_var.value = (1 - m) * running_var.value + m * unbiased
    else:
      mean, var = running_mean.value, running_var.value
    rstd = jax.lax.rsqrt(var + self.epsilon)
    out = (x32 - mean) * (rstd * scale.astype(jnp.float32)) + bias.astype(jnp.float32)
    return out.astype(self.dtype)


class DepthwiseConv(nn.Module):
  """PyTorch's depthwise `Conv2d(C, C * multiplier, k, stride, padding=k // 2, groups=C)`.

  Computed by `ops.pool(mode='conv')` (the platform's depthwise kernel); the bias, when
  there is one, is added after it, the same sum. A channel multiplier m repeats each input
  channel m times first: output channel c * m + j reads input channel c, as PyTorch's
  grouped conv does. Params: `kernel` [k, k, 1, C * m] (PyTorch's weight in Flax layout),
  `bias` [C * m].
  """
  kernel_size: int
  stride: int = 1
  multiplier: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = layers.torch_conv_init
  bias_init: Callable[..., Array] | None = None  # Default: PyTorch's, U(+-1/sqrt(k * k)).
  pool_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, channels = self.kernel_size, x.shape[-1] * self.multiplier
    kernel = self.param('kernel', self.kernel_init, (k, k, 1, channels), self.param_dtype)
    x = x.astype(self.dtype)
    if self.multiplier > 1:
      x = jnp.repeat(x, self.multiplier, axis=-1)
    y = ops.pool(x, 'conv', kernel=(k, k), strides=(self.stride,) * 2,
                 weights=kernel.astype(self.dtype), impl=self.pool_impl)
    if self.use_bias:
      bias_init = self.bias_init or torch_bias_init(k * k)
      y = y + self.param('bias', bias_init, (channels,), self.param_dtype).astype(self.dtype)
    return y


def conv(features: int, kernel: int, stride: int, padding: int, *, use_bias: bool = True,
         dtype: Any, param_dtype: Any, name: str, kernel_init=layers.torch_conv_init,
         bias_init=None, fan_in: int | None = None) -> nn.Conv:
  """PyTorch's `Conv2d(in, features, kernel, stride, padding)` (symmetric padding) as `nn.Conv`.

  `fan_in` (in * kernel * kernel) sets PyTorch's default bias init when `bias_init` is None.
  """
  if use_bias and bias_init is None:
    bias_init = torch_bias_init(fan_in) if fan_in else nn.initializers.zeros
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                 dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init,
                 bias_init=bias_init or nn.initializers.zeros, name=name)


def global_average(x: Array) -> Array:
  """Mean over the tokens of [B, N, C] (the original's AdaptiveAvgPool), in float32."""
  return jnp.mean(x.astype(jnp.float32), axis=1)
