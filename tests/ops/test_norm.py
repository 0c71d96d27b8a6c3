"""Layer norm: both kernels (portable, and XLA:CPU's hand-written gradient) equal Flax's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax import ops
from mvitv2_jax.models import layers
from mvitv2_jax.ops import cpu
from mvitv2_jax.ops import norm


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_layer_norm_matches_flax(dtype):
  # Same params, outputs and gradients as nn.LayerNorm(epsilon=1e-6, use_fast_variance=False).
  x = (3 * jax.random.normal(jax.random.key(0), (2, 5, 7, 16)) + 1).astype(dtype)
  ours = layers.LayerNorm(dtype=dtype)
  flax_norm = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, dtype=dtype)
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(1), p.shape),
                        flax_norm.init(jax.random.key(2), x))
  assert jax.tree.structure(params) == jax.tree.structure(ours.init(jax.random.key(2), x))
  cotangent = jax.random.normal(jax.random.key(3), x.shape)

  def loss(module, params, x):
    return jnp.sum(module.apply(params, x).astype(jnp.float32) * cotangent)

  got, want = ours.apply(params, x), flax_norm.apply(params, x)
  assert got.dtype == want.dtype == dtype
  np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=1e-6, atol=1e-6)
  tol = 1e-5 if dtype == jnp.float32 else 1e-2
  for got, want in zip(jax.tree.leaves(jax.grad(loss, argnums=(1, 2))(ours, params, x)),
                       jax.tree.leaves(jax.grad(loss, argnums=(1, 2))(flax_norm, params, x))):
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol, atol=tol)


def test_cpu_and_portable_kernels_agree():
  # `ops.layer_norm` runs `cpu.layer_norm` here; the portable one runs on TPU and GPU.
  x = 3 * jax.random.normal(jax.random.key(0), (4, 9, 24)) + 1
  scale, bias = jax.random.normal(jax.random.key(1), (2, 24))
  cotangent = jax.random.normal(jax.random.key(2), x.shape)
  loss = lambda f: lambda *a: jnp.sum(f(*a) * cotangent)
  for kernel in (cpu.layer_norm, ops.layer_norm):
    np.testing.assert_array_equal(kernel(x, scale, bias), norm.layer_norm(x, scale, bias))
    for got, want in zip(jax.grad(loss(kernel), argnums=(0, 1, 2))(x, scale, bias),
                         jax.grad(loss(norm.layer_norm), argnums=(0, 1, 2))(x, scale, bias)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
