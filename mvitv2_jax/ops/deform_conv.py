"""Deformable convolution (DCNv1, Dai et al. 2017) as LIT's Deformable Token Merging uses it.

Each output position samples its kh x kw taps at the regular grid position plus a learned
offset, bilinearly, and sums them through the kernel like a plain conv. The sampling is the
authors' CUDA kernel's (`dmcn_2d_im2col_bilinear` in LIT's `mm_modules/DCN`): offsets come as
(dy, dx) per tap, tap t = i * kw + j; a sample at (y, x) with y <= -1, y >= H, x <= -1 or
x >= W is zero; otherwise each of its four corners outside the map counts as zero. Its
gradient is the CUDA kernel's too: through the fractional parts (floor has none), so at an
integer position it is the difference towards the next pixel.

Two formulations of the sampling, the same numbers:
- 'gather': the four corners read by index from the flattened map; XLA:CPU and GPUs do
  row gathers well.
- 'one_hot': a [taps, H*W] bilinear matrix per output position (two separable one-hot rows
  weighted by the fractions) times the map: a dense matmul, for TPUs, whose gathers of many
  small rows run serially while the MXU does the product. It costs P*T*H*W*C MACs against
  the gather's 4*P*T*C reads, so only where gathers are slow.
The conv itself is then one dense layer over the sampled taps.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mvitv2_jax.ops import cpu
from mvitv2_jax.ops import linear
from mvitv2_jax.ops import platform

Array = jax.Array


def sample_positions(offsets: Array, kernel: tuple[int, int], strides: tuple[int, int],
                     padding: tuple[int, int]) -> tuple[Array, Array]:
  """Where each tap samples: (y, x), float32 [B, Ho, Wo, taps], in input pixel coordinates.

  Args:
    offsets: [B, Ho, Wo, 2 * taps], channels (dy, dx) per tap in row-major tap order, as
      the offset conv of a DCN outputs them.
    kernel: (kh, kw).
    strides: (sh, sw).
    padding: (ph, pw): the first tap of output 0 sits at (-ph, -pw).
  """
  batch, out_h, out_w, _ = offsets.shape
  taps = kernel[0] * kernel[1]
  tap_i, tap_j = np.divmod(np.arange(taps), kernel[1])
  base_y = (np.arange(out_h) * strides[0] - padding[0])[:, None, None] + tap_i
  base_x = (np.arange(out_w) * strides[1] - padding[1])[None, :, None] + tap_j
  pairs = offsets.astype(jnp.float32).reshape(batch, out_h, out_w, taps, 2)
  return base_y.astype(np.float32) + pairs[..., 0], base_x.astype(np.float32) + pairs[..., 1]


def _corners(y: Array, x: Array, height: int, width: int):
  """The four bilinear corners of each sample: ((row, col) int32, weight float32) pairs.

  Weights of samples outside (-1, H) x (-1, W) are zero, as the CUDA kernel skips them
  (values and gradients); corners outside the map are left to the formulations.
  """
  inside = ((y > -1) & (x > -1) & (y < height) & (x < width)).astype(jnp.float32)
  y0, x0 = jnp.floor(y), jnp.floor(x)
  ly, lx = y - y0, x - x0
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
  return [((y0, x0), (1 - ly) * (1 - lx) * inside), ((y0, x0 + 1), (1 - ly) * lx * inside),
          ((y0 + 1, x0), ly * (1 - lx) * inside), ((y0 + 1, x0 + 1), ly * lx * inside)]


def sample_gather(x: Array, y: Array, xs: Array) -> Array:
  """Bilinear samples of x [B, H, W, C] at (y, xs) [B, ...]: [B, ..., C] float32, by gathers."""
  batch, height, width, channels = x.shape
  flat = x.reshape(batch, height * width, channels)
  out = 0.0
  for (rows, cols), weight in _corners(y, xs, height, width):
    valid = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    index = jnp.clip(rows, 0, height - 1) * width + jnp.clip(cols, 0, width - 1)
    values = jax.vmap(lambda f, i: f[i])(flat, index.reshape(batch, -1))
    weight = jnp.where(valid, weight, 0.0).reshape(batch, -1, 1)
    out = out + values.astype(jnp.float32) * weight
  return out.reshape(*y.shape, channels)


def sample_one_hot(x: Array, y: Array, xs: Array) -> Array:
  """`sample_gather` as a matmul with [B, ..., H * W] bilinear matrices (separable rows)."""
  batch, height, width, channels = x.shape
  inside = ((y > -1) & (xs > -1) & (y < height) & (xs < width)).astype(jnp.float32)
  y0, x0 = jnp.floor(y), jnp.floor(xs)
  ly, lx = y - y0, xs - x0
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
  # An index outside the map has an all-zero one-hot row: its corner counts as zero.
  rows = (jax.nn.one_hot(y0, height) * (1 - ly)[..., None]
          + jax.nn.one_hot(y0 + 1, height) * ly[..., None]) * inside[..., None]
  cols = (jax.nn.one_hot(x0, width) * (1 - lx)[..., None]
          + jax.nn.one_hot(x0 + 1, width) * lx[..., None])
  matrix = (rows[..., :, None] * cols[..., None, :]).reshape(batch, -1, height * width)
  # Full float32 products: TPUs would otherwise round the float32 map to bfloat16.
  precision = jax.lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
  out = jnp.einsum('bqk,bkc->bqc', matrix.astype(x.dtype), x.reshape(batch, -1, channels),
                   precision=precision, preferred_element_type=jnp.float32)
  return out.reshape(*y.shape, channels)


def deform_conv(x: Array, offsets: Array, kernel: Array, bias: Array, *,
                strides: tuple[int, int], padding: tuple[int, int],
                impl: str = 'auto') -> Array:
  """DCNv1: conv of x at the offset sampling positions (one deformable group, no groups).

  Args:
    x: the map [B, H, W, C].
    offsets: [B, Ho, Wo, 2 * kh * kw], (dy, dx) per tap, as PyTorch's offset conv gives
      them (channel 2t is tap t's dy).
    kernel: [kh, kw, C, O] (Flax layout).
    bias: [O].
    strides: (sh, sw).
    padding: (ph, pw), zeros: samples outside the map read zero.
    impl: 'auto' (per platform: `platform.AUTO_KERNELS`), 'gather' or 'one_hot'.

  Returns:
    [B, Ho, Wo, O] in x's dtype.
  """
  kh, kw, channels, features = kernel.shape
  y, xs = sample_positions(offsets, (kh, kw), tuple(strides), tuple(padding))
  sampled = platform.dispatch('deform_conv', impl, {
      'gather': sample_gather, 'one_hot': sample_one_hot}, x, y, xs)
  columns = sampled.astype(x.dtype).reshape(*y.shape[:3], kh * kw * channels)
  weights = kernel.astype(x.dtype).reshape(kh * kw * channels, features)
  return platform.on_cpu(columns, weights, bias.astype(x.dtype), cpu=cpu.dense,
                         default=linear.dense)
