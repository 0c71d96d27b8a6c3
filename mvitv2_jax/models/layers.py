"""Small layers of MViT: initialisers, dense, layer norm, GELU, MLP, stochastic depth."""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvitv2_jax import ops
from mvitv2_jax.ops import cpu as cpu_ops
from mvitv2_jax.ops import norm as norm_ops
from mvitv2_jax.ops import platform

Array = jax.Array

# PyTorch's trunc_normal_(std=0.02) truncates at +-2 absolute, i.e. at +-100 std:
# effectively an untruncated normal. Linear weights, rel-pos tables and cls token.
trunc_normal_init = nn.initializers.truncated_normal(stddev=0.02, lower=-100.0, upper=100.0)
# PyTorch's default conv init (kaiming_uniform, a=sqrt(5)): U(+-1/sqrt(fan_in)).
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def torch_conv_bias_init(fan_in: int) -> Callable[..., Array]:
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class Dense(nn.Module):
  """`nn.Dense` (same params, init and math) computed by `ops.dense`."""
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = trunc_normal_init

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    return ops.dense(x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype))


class LayerNorm(nn.Module):
  """`nn.LayerNorm(epsilon=1e-6, use_fast_variance=False)`: same params and math, by `ops`.

  Statistics in float32 whatever the input dtype, as Flax's. `epsilon` other than 1e-6
  (PyTorch's default 1e-5, as ResT and LIT use) runs the same kernels with that epsilon.
  """
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  epsilon: float = norm_ops.EPSILON

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (x.shape[-1],), self.param_dtype)
    if self.epsilon == norm_ops.EPSILON:
      return ops.layer_norm(x, scale, bias).astype(self.dtype)
    # The platform rule of `ops.layer_norm`, with this epsilon.
    epsilon = float(self.epsilon)
    return platform.on_cpu(
        x, scale, bias, cpu=functools.partial(cpu_ops.layer_norm, epsilon=epsilon),
        default=functools.partial(norm_ops.layer_norm, epsilon=epsilon)).astype(self.dtype)


def gelu(x: Array) -> Array:
  """Exact GELU in PyTorch's form, x * (1 + erf(x / sqrt(2))) / 2.

  `nn.gelu(approximate=False)` computes the same function through erfc, which XLA:CPU
  evaluates with an exp and a division.
  """
  return x * (jax.lax.erf(x * np.asarray(2**-0.5, x.dtype)) + 1) * np.asarray(0.5, x.dtype)


class Mlp(nn.Module):
  """fc1, exact GELU, fc2."""
  hidden_dim: int
  out_dim: int
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = Dense(self.hidden_dim, self.dtype, self.param_dtype, name='fc1')(x)
    return Dense(self.out_dim, self.dtype, self.param_dtype, name='fc2')(gelu(x))


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per sample."""
  rate: float

  @nn.compact
  def __call__(self, x: Array, train: bool, rate: Array | None = None) -> Array:
    """`rate` (a traced one in scanned runs) overrides the module's."""
    rate = self.rate if rate is None else rate
    if not train or (isinstance(rate, float) and rate == 0.0):
      return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return x * mask.astype(x.dtype) / jnp.asarray(keep, x.dtype)
