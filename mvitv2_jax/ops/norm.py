"""Layer norm over the last axis, PyTorch's: eps 1e-6 (or `epsilon`), two-pass variance, float32
statistics."""

import jax
import jax.numpy as jnp

Array = jax.Array

EPSILON = 1e-6


def moments(x: Array, epsilon: float = EPSILON) -> tuple[Array, Array]:
  """Mean and 1 / std over the last axis, in float32 (keepdims)."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, -1, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x32 - mean), -1, keepdims=True) + epsilon)
  return mean, rstd


def normalize(x: Array, mean: Array, rstd: Array, scale: Array, bias: Array) -> Array:
  """(x - mean) * rstd * scale + bias, in float32."""
  return ((x.astype(jnp.float32) - mean) * (rstd * scale.astype(jnp.float32))
          + bias.astype(jnp.float32))


def layer_norm(x: Array, scale: Array, bias: Array, epsilon: float = EPSILON) -> Array:
  """Normalised x [..., C] times scale [C] plus bias [C], float32; autodiff gradient."""
  return normalize(x, *moments(x, epsilon), scale, bias)
