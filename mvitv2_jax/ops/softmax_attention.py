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
import numpy as np

from mvitv2_jax.ops import partitioning

Array = jax.Array


def rel_pos_bias(rel_terms: tuple[Array, ...], k_grid: tuple[int, ...],
                 num_prefix: int) -> Array:
  """The factored term as a [B, heads, Nq, Nk] bias (zeros on the class rows and columns).

  Args:
    rel_terms: per axis a, [B, heads, *q_grid, k_grid[a]] float32.
    k_grid: the key grid.
    num_prefix: class tokens in front of the spatial ones.

  Returns:
    float32 [B, heads, num_prefix + prod(q_grid), num_prefix + prod(k_grid)], or None
    without terms (a model without relative positions).
  """
  if not rel_terms:
    return None
  batch_heads = rel_terms[0].shape[:2]
  q_grid = rel_terms[0].shape[2:-1]
  broadcast = [term.reshape(term.shape[:-1] + tuple(n if a == axis else 1
                                                    for a, n in enumerate(k_grid)))
               for axis, term in enumerate(rel_terms)]
  bias = functools.reduce(operator.add, broadcast)
  bias = bias.reshape(*batch_heads, math.prod(q_grid), math.prod(k_grid))
  return jnp.pad(bias, ((0, 0), (0, 0), (num_prefix, 0), (num_prefix, 0)))


def _attend(q: Array, k: Array, v: Array, bias: Array | None) -> Array:
  """softmax(q kᵀ + bias) v with float32 logits; the matmuls run head-major ([B, heads, N, d])."""
  q_h, k_h, v_h = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))
  logits = jnp.einsum('bnqd,bnkd->bnqk', q_h, k_h, preferred_element_type=jnp.float32)
  if bias is not None:
    logits = logits + bias
  attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.swapaxes(jnp.einsum('bnqk,bnkd->bnqd', attn, v_h), 1, 2)  # [B, Nq, heads, d]


def einsum_attention(q: Array, k: Array, v: Array, rel_terms: tuple[Array, ...], *,
                     k_grid: tuple[int, ...], num_prefix: int) -> Array:
  """Explicit float32 logits plus the bias, and softmax."""
  scale = jnp.asarray(q.shape[-1]**-0.5, q.dtype)
  return _attend(q * scale, k, v, rel_pos_bias(rel_terms, k_grid, num_prefix))


def dot_product_attention(q: Array, k: Array, v: Array, rel_terms: tuple[Array, ...], *,
                          k_grid: tuple[int, ...], num_prefix: int) -> Array:
  """`jax.nn.dot_product_attention` with the term as its bias, in the compute dtype."""
  bias = rel_pos_bias(rel_terms, k_grid, num_prefix)
  bias = None if bias is None else bias.astype(q.dtype)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=q.shape[-1]**-0.5)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def key_one_hots(k_grid: tuple[int, ...], num_prefix: int) -> np.ndarray:
  """[Nk, sum(k_grid)] float32: for each key, one-hot rows of its coordinate per axis.

  Class-token keys have no coordinate (zero rows), so no rel-pos term reaches them.
  """
  coords = np.stack(np.unravel_index(np.arange(math.prod(k_grid)), k_grid), -1)
  columns = [np.eye(n, dtype=np.float32)[coords[:, a]] for a, n in enumerate(k_grid)]
  spatial = np.concatenate(columns, -1)
  return np.concatenate([np.zeros((num_prefix, spatial.shape[1]), np.float32), spatial])


def augment(q: Array, k: Array, v: Array, rel_terms: tuple[Array, ...], *,
            k_grid: tuple[int, ...], num_prefix: int,
            multiple: int = 1) -> tuple[Array, Array, Array]:
  """q, k, v whose plain attention logits q'·k' are scale q·k plus the rel-pos term.

  bias[i, j] = sum_a term_a[i, coord_a(j)] is a dot product: q' = [q / sqrt(d), term_0[i],
  term_1[i], ...] and k' = [k, onehot(coord_0(j)), onehot(coord_1(j)), ...]. So attention
  with this term needs no [B, heads, Nq, Nk] bias, and fused kernels apply (scale 1).

  Args:
    q, k, v: [B, N, heads, d] as for `einsum_attention`.
    rel_terms: per axis a, [B, heads, *q_grid, k_grid[a]] float32.
    k_grid: the spatial key grid.
    num_prefix: class tokens in front.
    multiple: the head dim of q', k' and v' is padded with zeros to a multiple of this
      (v too, to q's width: the fused kernels need one head dim).

  Returns:
    (q', k', v') [B, N, heads, D] in q's dtype, D = round_up(d + sum(k_grid), multiple).
  """
  batch, num_q, heads, dim = q.shape
  if not rel_terms:
    k_grid = ()  # No term: no extra columns.
  width = _round_up(dim + sum(k_grid), multiple)
  scale = jnp.asarray(dim**-0.5, q.dtype)
  pad = width - dim - sum(k_grid)
  q_aug, k_aug = q * scale, k
  if rel_terms:
    # [B, heads, *q_grid, k_a] -> [B, Nq, heads, k_a], zero rows for the class tokens.
    terms = [jnp.moveaxis(t.reshape(batch, heads, -1, t.shape[-1]), 1, 2) for t in rel_terms]
    terms = jnp.pad(jnp.concatenate(terms, -1), ((0, 0), (num_prefix, 0), (0, 0), (0, 0)))
    q_aug = jnp.concatenate([q_aug, terms.astype(q.dtype)], -1)
    one_hots = jnp.asarray(key_one_hots(k_grid, num_prefix), k.dtype)[None, :, None]
    k_aug = jnp.concatenate([k, jnp.broadcast_to(one_hots, (*k.shape[:3], sum(k_grid)))], -1)
  pad_dims = lambda x, n: jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, n)))
  return pad_dims(q_aug, pad), pad_dims(k_aug, pad), pad_dims(v, width - v.shape[-1])


def xla_attention(q: Array, k: Array, v: Array, rel_terms: tuple[Array, ...], *,
                  k_grid: tuple[int, ...], num_prefix: int) -> Array:
  """Plain attention (no bias) on the augmented q and k, for XLA to fuse."""
  q_aug, k_aug, _ = augment(q, k, v, rel_terms, k_grid=k_grid, num_prefix=num_prefix)
  return _attend(q_aug, k_aug, v, None)


def cudnn_attention(q: Array, k: Array, v: Array, rel_terms: tuple[Array, ...], *,
                    k_grid: tuple[int, ...], num_prefix: int) -> Array:
  """cuDNN's fused flash attention on the augmented q, k (head dim a multiple of 8).

  cuDNN needs bf16 or fp16, a head dim within its limit and the CUDA plugin when the
  program is traced; where one of these fails, `xla_attention` runs instead.
  """
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    return xla_attention(q, k, v, rel_terms, k_grid=k_grid, num_prefix=num_prefix)
  q_aug, k_aug, v_pad = augment(q, k, v, rel_terms, k_grid=k_grid, num_prefix=num_prefix,
                                multiple=8)
  kernel = functools.partial(even_length_attention, implementation='cudnn')
  try:
    out = partitioning.over_batch_and_heads(kernel)(q_aug, k_aug, v_pad)
  except (NotImplementedError, RuntimeError):  # Unsupported head dim, or no cuDNN here.
    return xla_attention(q, k, v, rel_terms, k_grid=k_grid, num_prefix=num_prefix)
  return out[..., :v.shape[-1]]


def even_length_attention(q: Array, k: Array, v: Array, *, implementation: str) -> Array:
  """`jax.nn.dot_product_attention` (scale 1) with odd token counts padded by one row.

  cuDNN's training kernels take even counts only (a class token makes them odd). The
  padded key is left out by the kernel's own key lengths, not by a bias tensor; the
  padded query row is dropped.
  """
  (batch, num_q), num_k = q.shape[:2], k.shape[1]
  rows = lambda x, n: jnp.pad(x, ((0, 0), (0, n), (0, 0), (0, 0)))
  kv_lengths = jnp.full((batch,), num_k, jnp.int32) if num_k % 2 else None
  out = jax.nn.dot_product_attention(
      rows(q, num_q % 2), rows(k, num_k % 2), rows(v, num_k % 2), scale=1.0,
      key_value_seq_lengths=kv_lengths, implementation=implementation)
  return out[:, :num_q]


_TPU_BLOCK = 128  # The Pallas TPU flash kernel's default block along tokens and lanes.


def _pallas_kernel(q_aug: Array, k_aug: Array, v_pad: Array, *, num_q: int, num_k: int,
                   width_v: int) -> Array:
  """The Pallas TPU flash kernel on [B, N, heads, D] inputs padded to its blocks.

  Padded keys get their own segment id, so no real query attends to them.
  """
  from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash  # pylint: disable=g-import-not-at-top
  pad_q, pad_k = _round_up(num_q, _TPU_BLOCK) - num_q, _round_up(num_k, _TPU_BLOCK) - num_k
  rows = lambda x, n: jnp.swapaxes(jnp.pad(x, ((0, 0), (0, n), (0, 0), (0, 0))), 1, 2)
  batch = q_aug.shape[0]
  segments = tpu_flash.SegmentIds(
      q=jnp.broadcast_to(jnp.arange(num_q + pad_q) >= num_q, (batch, num_q + pad_q)),
      kv=jnp.broadcast_to(jnp.arange(num_k + pad_k) >= num_k, (batch, num_k + pad_k)))
  out = tpu_flash.flash_attention(
      rows(q_aug, pad_q), rows(k_aug, pad_k), rows(v_pad, pad_k),
      segment_ids=jax.tree.map(lambda s: s.astype(jnp.int32), segments), sm_scale=1.0)
  return jnp.swapaxes(out, 1, 2)[:, :num_q, :, :width_v]


def pallas_attention(q: Array, k: Array, v: Array, rel_terms: tuple[Array, ...], *,
                     k_grid: tuple[int, ...], num_prefix: int) -> Array:
  """The Pallas TPU flash-attention kernel on the augmented q, k.

  Head dims are padded to 128 lanes and token counts to 128-row blocks.
  """
  q_aug, k_aug, v_pad = augment(q, k, v, rel_terms, k_grid=k_grid, num_prefix=num_prefix,
                                multiple=_TPU_BLOCK)
  kernel = functools.partial(_pallas_kernel, num_q=q.shape[1], num_k=k.shape[1],
                             width_v=v.shape[-1])
  return partitioning.over_batch(kernel)(q_aug, k_aug, v_pad)
