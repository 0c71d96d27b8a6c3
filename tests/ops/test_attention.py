"""Attention kernels: the decomposed rel-pos term as a bias, einsum and dot-product paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax import ops
from mvitv2_jax.ops import softmax_attention as attention


def _inputs(num_prefix, q_grid, k_grid, heads=2, dim=8, batch=2):
  keys = jax.random.split(jax.random.key(0), 4)
  nq, nk = num_prefix + np.prod(q_grid), num_prefix + np.prod(k_grid)
  q, k, v = (jax.random.normal(key, (batch, n, heads, dim))
             for key, n in zip(keys, (nq, nk, nk)))
  terms = tuple(jax.random.normal(jax.random.fold_in(keys[3], a),
                                  (batch, heads, *q_grid, k_grid[a]))
                for a in range(len(k_grid)))
  return q, k, v, terms


@pytest.mark.parametrize('q_grid,k_grid', [((4, 6), (2, 3)), ((2, 3, 3), (2, 3, 2))])
def test_rel_pos_bias_against_its_definition(q_grid, k_grid):
  _, _, _, terms = _inputs(1, q_grid, k_grid)
  bias = np.asarray(attention.rel_pos_bias(terms, k_grid, num_prefix=1))
  assert bias.shape == (2, 2, 1 + np.prod(q_grid), 1 + np.prod(k_grid))
  assert not bias[:, :, 0].any() and not bias[:, :, :, 0].any()  # Class row and column.
  for i, q_pos in enumerate(np.ndindex(*q_grid)):
    for j, k_pos in enumerate(np.ndindex(*k_grid)):
      want = sum(np.asarray(terms[a])[:, :, *q_pos, k_pos[a]] for a in range(len(k_grid)))
      np.testing.assert_allclose(bias[:, :, 1 + i, 1 + j], want, rtol=1e-6)


@pytest.mark.parametrize('num_prefix', [0, 1])
def test_kernels_agree_with_plain_softmax_attention(num_prefix):
  q, k, v, terms = _inputs(num_prefix, (4, 6), (2, 3))
  bias = attention.rel_pos_bias(terms, (2, 3), num_prefix)
  logits = jnp.einsum('bqnd,bknd->bnqk', q, k) / np.sqrt(q.shape[-1]) + bias
  want = jnp.einsum('bnqk,bknd->bqnd', jax.nn.softmax(logits, -1), v)
  for impl in ('einsum', 'dot_product', 'auto'):
    got = ops.attention(q, k, v, terms, k_grid=(2, 3), num_prefix=num_prefix, impl=impl)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=impl)
