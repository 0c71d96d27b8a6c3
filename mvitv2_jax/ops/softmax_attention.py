"""Softmax attention with MViTv2's decomposed relative-position term.

q, k, v are [B, N, heads, d] with `num_prefix` class tokens first and the spatial
tokens row-major over their grids. The rel-pos term comes factored, one array per
spatial axis a: term_a[b, n, i, j_a] is added to the logit of query i and every key
whose coordinate on axis a is j_a, on the spatial x spatial logits only.
"""

import functools
import math
import operator

import jax
import jax.numpy as jnp

Array = jax.Array


def rel_pos_bias(rel_terms: tuple[Array, ...], k_grid: tuple[int, ...],
                 num_prefix: int) -> Array:
  """The factored term as a [B, heads, Nq, Nk] bias (zeros on the class rows and columns).

  Args:
    rel_terms: per axis a, [B, heads, *q_grid, k_grid[a]] float32.
    k_grid: the key grid.
    num_prefix: class tokens in front of the spatial ones.

  Returns:
    float32 [B, heads, num_prefix + prod(q_grid), num_prefix + prod(k_grid)].
  """
  batch_heads = rel_terms[0].shape[:2]
  q_grid = rel_terms[0].shape[2:-1]
  broadcast = [term.reshape(term.shape[:-1] + tuple(n if a == axis else 1
                                                    for a, n in enumerate(k_grid)))
               for axis, term in enumerate(rel_terms)]
  bias = functools.reduce(operator.add, broadcast)
  bias = bias.reshape(*batch_heads, math.prod(q_grid), math.prod(k_grid))
  return jnp.pad(bias, ((0, 0), (0, 0), (num_prefix, 0), (num_prefix, 0)))


def einsum_attention(q: Array, k: Array, v: Array, rel_terms: tuple[Array, ...], *,
                     k_grid: tuple[int, ...], num_prefix: int) -> Array:
  """Explicit float32 logits and softmax; the matmuls run head-major ([B, heads, N, d])."""
  scale = jnp.asarray(q.shape[-1]**-0.5, q.dtype)
  q_h, k_h, v_h = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))
  logits = jnp.einsum('bnqd,bnkd->bnqk', q_h * scale, k_h, preferred_element_type=jnp.float32)
  logits = logits + rel_pos_bias(rel_terms, k_grid, num_prefix)
  attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.swapaxes(jnp.einsum('bnqk,bnkd->bnqd', attn, v_h), 1, 2)  # [B, Nq, heads, d]


def dot_product_attention(q: Array, k: Array, v: Array, rel_terms: tuple[Array, ...], *,
                          k_grid: tuple[int, ...], num_prefix: int) -> Array:
  """`jax.nn.dot_product_attention` with the term as its bias, in the compute dtype."""
  bias = rel_pos_bias(rel_terms, k_grid, num_prefix).astype(q.dtype)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=q.shape[-1]**-0.5)
