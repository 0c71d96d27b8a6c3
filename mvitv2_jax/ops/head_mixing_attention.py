"""ResT's efficient multi-head self-attention core: heads mixed before the softmax, each
head's attention map instance-normalised after it.

    attn = InstanceNorm(softmax(conv1x1_over_heads(q kᵀ / sqrt(d))))      # per head, N x N'
    out = attn v

Neither step fits a fused (flash) kernel: the 1x1 conv mixes the logits of all heads at
each (query, key) pair, and the instance norm needs the mean and variance of each head's
whole N x N' map after the softmax, so every map is materialised; this is the explicit
einsum formulation on every platform (docs/kernels.md). Statistics and the softmax run in
float32. The norm divides by the map's standard deviation, which after a flat softmax is
small: rounding of the probabilities is amplified there, in the original as here.
"""

import jax
import jax.numpy as jnp

Array = jax.Array

INSTANCE_NORM_EPSILON = 1e-5  # PyTorch's InstanceNorm2d default, as ResT uses it.


def head_mixing_attention(q: Array, k: Array, v: Array, mix_kernel: Array, mix_bias: Array,
                          epsilon: float = INSTANCE_NORM_EPSILON) -> Array:
  """ResT's EMSA with the head transform.

  Args:
    q: queries [B, Nq, heads, d], unscaled.
    k: keys [B, Nk, heads, d].
    v: values [B, Nk, heads, d].
    mix_kernel: the 1x1 conv over heads as a [heads_in, heads_out] matrix.
    mix_bias: [heads_out].
    epsilon: the instance norm's (no affine parameters, biased variance over N x N').

  Returns:
    [B, Nq, heads, d] in v's dtype.
  """
  scale = q.shape[-1]**-0.5
  # NOTE: the original scales the logits, not q, before mixing heads.
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32) * scale
  mixed = (jnp.einsum('bhqk,hg->bgqk', logits, mix_kernel.astype(jnp.float32))
           + mix_bias.astype(jnp.float32)[:, None, None])
  attn = jax.nn.softmax(mixed, axis=-1)
  mean = jnp.mean(attn, axis=(-2, -1), keepdims=True)
  var = jnp.mean(jnp.square(attn - mean), axis=(-2, -1), keepdims=True)
  attn = (attn - mean) * jax.lax.rsqrt(var + epsilon)
  return jnp.einsum('bhqk,bkhd->bqhd', attn.astype(v.dtype), v)
