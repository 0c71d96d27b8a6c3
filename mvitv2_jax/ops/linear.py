"""The affine map of a dense layer over the last axis."""

import jax

Array = jax.Array


def dense(x: Array, kernel: Array, bias: Array) -> Array:
  """x [..., C_in] @ kernel [C_in, C_out] + bias [C_out], as `flax.linen.Dense` computes it."""
  y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
  return y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
