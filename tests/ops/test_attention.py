"""Attention kernels: the decomposed rel-pos term as a bias, einsum and dot-product paths."""

import functools

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
  # 'cudnn' runs its XLA fallback here (fp32, and no GPU to trace cuDNN for).
  for impl in ('einsum', 'dot_product', 'xla', 'cudnn', 'auto'):
    got = ops.attention(q, k, v, terms, k_grid=(2, 3), num_prefix=num_prefix, impl=impl)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=impl)


def test_augmented_logits_are_the_scaled_logits_plus_the_term():
  q, k, v, terms = _inputs(1, (2, 3, 3), (2, 3, 2))
  q_aug, k_aug, v_pad = attention.augment(q, k, v, terms, k_grid=(2, 3, 2), num_prefix=1,
                                          multiple=8)
  assert q_aug.shape[-1] == k_aug.shape[-1] == v_pad.shape[-1] == 16  # 8 + 2 + 3 + 2 -> 16.
  got = jnp.einsum('bqnd,bknd->bnqk', q_aug, k_aug)
  want = (jnp.einsum('bqnd,bknd->bnqk', q, k) / np.sqrt(q.shape[-1])
          + attention.rel_pos_bias(terms, (2, 3, 2), num_prefix=1))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(v_pad[..., :8], v)
  assert not v_pad[..., 8:].any()


@pytest.mark.parametrize('num_prefix,q_grid,k_grid', [(0, (4, 6), (2, 3)), (1, (2, 3, 3), (2, 3, 2))])
def test_pallas_tpu_kernel_agrees_with_einsum(num_prefix, q_grid, k_grid):
  # The TPU flash kernel in Pallas's TPU interpret mode (on this CPU): values and gradients.
  pltpu = pytest.importorskip('jax.experimental.pallas.tpu')
  q, k, v, terms = _inputs(num_prefix, q_grid, k_grid)
  cotangent = jax.random.normal(jax.random.key(7), q.shape)

  def value_and_grads(impl):
    def loss(q, k, v, terms):
      out = ops.attention(q, k, v, terms, k_grid=k_grid, num_prefix=num_prefix, impl=impl)
      return jnp.sum(out * cotangent), out
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, terms)

  want_grads, want = value_and_grads('einsum')
  with pltpu.force_tpu_interpret_mode():
    got_grads, got = value_and_grads('pallas')
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for got_leaf, want_leaf in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-4, atol=1e-5)


def test_pallas_tpu_kernel_is_one_op_per_batch_shard_with_or_without_a_mesh():
  # The kernel is wrapped whatever the context: the mesh is read when the program is lowered
  # (ops/partitioning.py; compiled for a TPU slice in tests/tools/test_sharding_ways.py).
  pytest.importorskip('jax.experimental.pallas.tpu')
  mesh = jax.sharding.AbstractMesh((2,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  q, k, v, terms = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                _inputs(1, (4, 4), (2, 2)))
  attend = lambda q, k, v, terms: ops.attention(q, k, v, terms, k_grid=(2, 2), num_prefix=1,
                                                impl='pallas')
  assert 'per_batch_shard' in str(jax.jit(attend).trace(q, k, v, terms).jaxpr)
  with jax.sharding.use_abstract_mesh(mesh):
    assert 'per_batch_shard' in str(jax.jit(attend).trace(q, k, v, terms).jaxpr)


@pytest.mark.parametrize('num_q,num_k', [(7, 5), (6, 5), (7, 4), (6, 4)])
def test_even_length_padding_leaves_attention_and_gradients_unchanged(num_q, num_k):
  # The padding cuDNN's kernel gets, run by XLA's implementation on this CPU.
  keys = jax.random.split(jax.random.key(3), 4)
  q, k, v = (jax.random.normal(key, (2, n, 2, 8)) for key, n in zip(keys, (num_q, num_k, num_k)))
  cotangent = jax.random.normal(keys[3], q.shape)

  def value_and_grads(attend):
    loss = lambda q, k, v: (jnp.sum(attend(q, k, v) * cotangent), attend(q, k, v))
    return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)

  want_grads, want = value_and_grads(
      lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=1.0))
  got_grads, got = value_and_grads(functools.partial(attention.even_length_attention,
                                                     implementation='xla'))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for got_leaf, want_leaf in zip(got_grads, want_grads):
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-5, atol=1e-6)
