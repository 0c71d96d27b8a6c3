"""Small layers: exact GELU and the dense layer against Flax's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax.models import layers


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_gelu_matches_flax_exact_gelu(dtype):
  # The erf form against nn.gelu(approximate=False) (erfc), tails included.
  x = jnp.linspace(-12.0, 12.0, 4001).astype(dtype)
  got, want = layers.gelu(x), nn.gelu(x, approximate=False)
  assert got.dtype == dtype
  tol = 1e-6 if dtype == jnp.float32 else 1e-2
  np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol, atol=tol)
  grad = lambda f: jax.vmap(jax.grad(lambda v: f(v).astype(jnp.float32)))(x)
  np.testing.assert_allclose(np.float32(grad(layers.gelu)),
                             np.float32(grad(lambda v: nn.gelu(v, approximate=False))),
                             rtol=10 * tol, atol=10 * tol)


def test_dense_matches_flax_dense():
  x = jax.random.normal(jax.random.key(0), (2, 7, 12))
  ours, flax_dense = layers.Dense(5), nn.Dense(5, kernel_init=layers.trunc_normal_init)
  params = flax_dense.init(jax.random.key(1), x)
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)
  assert jax.tree.structure(params) == jax.tree.structure(ours.init(jax.random.key(1), x))
  np.testing.assert_allclose(ours.apply(params, x), flax_dense.apply(params, x), rtol=1e-6)
