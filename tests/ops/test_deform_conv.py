"""Deformable conv (DCNv1): both formulations against `map_coordinates`, a plain conv at zero
offsets, each other, and the authors' CUDA kernel's definition (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import ndimage

from mvitv2_jax.ops import deform_conv

IMPLS = ('gather', 'one_hot')


def _inputs(size=(7, 6), channels=3, features=5, kernel=(2, 2), stride=(2, 2), padding=(0, 0),
            scale=2.0, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  out_h = (size[0] + 2 * padding[0] - kernel[0]) // stride[0] + 1
  out_w = (size[1] + 2 * padding[1] - kernel[1]) // stride[1] + 1
  x = jax.random.normal(keys[0], (2, *size, channels))
  # Offsets up to a few pixels: samples cross pixel borders and leave the map.
  offsets = scale * jax.random.normal(keys[1], (2, out_h, out_w, 2 * kernel[0] * kernel[1]))
  w = jax.random.normal(keys[2], (*kernel, channels, features))
  b = jax.random.normal(keys[3], (features,))
  return x, offsets, w, b


def _reference(x, offsets, w, b, stride, padding):
  """The definition through `map_coordinates` (order 1, zeros outside: cval 0)."""
  kh, kw, channels, _ = w.shape
  y, xs = deform_conv.sample_positions(offsets, (kh, kw), stride, padding)

  def sample(image, y, xs):  # image [H, W], coordinates [...].
    return ndimage.map_coordinates(image, [y, xs], order=1, mode='constant', cval=0.0)

  sampled = jax.vmap(lambda im, y, xs: jax.vmap(sample, (2, None, None), -1)(im, y, xs))(
      x, y, xs)  # [B, Ho, Wo, taps, C]
  return jnp.einsum('bhwtc,tco->bhwo', sampled, w.reshape(kh * kw, channels, -1)) + b


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('kernel,stride,padding', [((2, 2), (2, 2), (0, 0)),
                                                   ((3, 3), (1, 1), (1, 1)),
                                                   ((3, 2), (2, 1), (1, 0))])
def test_values_and_gradients_match_map_coordinates(impl, kernel, stride, padding):
  x, offsets, w, b = _inputs(kernel=kernel, stride=stride, padding=padding)
  ours = lambda x, o, w, b: deform_conv.deform_conv(x, o, w, b, strides=stride, padding=padding,
                                                    impl=impl)
  ref = lambda x, o, w, b: _reference(x, o, w, b, stride, padding)
  np.testing.assert_allclose(ours(x, offsets, w, b), ref(x, offsets, w, b), rtol=1e-5, atol=1e-5)
  cotangent = jax.random.normal(jax.random.key(9), ours(x, offsets, w, b).shape)
  loss = lambda f: lambda *a: jnp.sum(f(*a) * cotangent)
  got = jax.grad(loss(ours), argnums=(0, 1, 2, 3))(x, offsets, w, b)
  want = jax.grad(loss(ref), argnums=(0, 1, 2, 3))(x, offsets, w, b)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('impl', IMPLS)
def test_zero_offsets_are_a_plain_conv(impl):
  x, offsets, w, b = _inputs(size=(8, 6), kernel=(3, 3), stride=(2, 2), padding=(1, 1))
  got = deform_conv.deform_conv(x, jnp.zeros_like(offsets), w, b, strides=(2, 2),
                                padding=(1, 1), impl=impl)
  want = jax.lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + b
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_formulations_agree_in_values_and_gradients():
  x, offsets, w, b = _inputs(size=(8, 8), scale=3.0, seed=1)
  outs = {}
  for impl in IMPLS:
    f = lambda *a, impl=impl: jnp.sum(jnp.sin(deform_conv.deform_conv(
        *a, strides=(2, 2), padding=(0, 0), impl=impl)))
    outs[impl] = jax.value_and_grad(f, argnums=(0, 1, 2, 3))(x, offsets, w, b)
  for got, want in zip(jax.tree.leaves(outs['one_hot']), jax.tree.leaves(outs['gather'])):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('impl', IMPLS)
def test_offset_gradient_at_integer_positions_is_the_forward_difference(impl):
  # The CUDA kernel differentiates through the fractional part: at an integer position
  # (offsets zero, as initialised) d out / d dy is x[y + 1] - x[y], zero past the edge.
  x = jnp.arange(16.0).reshape(1, 4, 4, 1) ** 2
  w = jnp.zeros((2, 2, 1, 1)).at[0, 0].set(1.0)  # Tap 0 only.
  grad = jax.grad(lambda o: deform_conv.deform_conv(x, o, w, jnp.zeros(1), strides=(2, 2),
                                                    padding=(0, 0), impl=impl).sum())(
      jnp.zeros((1, 2, 2, 8)))
  image = np.asarray(x[0, :, :, 0])
  want_dy = image[1::2][:, ::2] - image[0::2][:, ::2]  # Rows 1, 3 minus rows 0, 2.
  want_dx = image[::2][:, 1::2] - image[::2][:, 0::2]
  np.testing.assert_allclose(grad[0, :, :, 0], want_dy)
  np.testing.assert_allclose(grad[0, :, :, 1], want_dx)


@pytest.mark.parametrize('offset', [-1.0, -0.5, -1.5, 3.5, 4.0, 0.25])
def test_samples_at_and_past_the_edges(offset):
  # Samples at y <= -1 or y >= H read zero; in between, corners off the map count as zero.
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 2))
  w = jax.random.normal(jax.random.key(1), (2, 2, 2, 3))
  offsets = jnp.full((1, 2, 2, 8), offset)
  for impl in IMPLS:
    out = deform_conv.deform_conv(x, offsets, w, jnp.zeros(3), strides=(2, 2), padding=(0, 0),
                                  impl=impl)
    want = dcn_cuda_definition(np.asarray(x).transpose(0, 3, 1, 2).astype(np.float64),
                               np.asarray(offsets).transpose(0, 3, 1, 2).astype(np.float64),
                               np.asarray(w).transpose(3, 2, 0, 1), np.zeros(3), 2)
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), want, atol=1e-5)


def dcn_cuda_definition(x, offsets, weight, bias, stride):
  """A loop over the CUDA kernel's formula (`dmcn_2d_im2col_bilinear`), NCHW as torch's."""
  batch, channels, height, width = x.shape
  out_channels, _, kh, kw = weight.shape
  out_h, out_w = offsets.shape[2:]
  out = np.zeros((batch, out_channels, out_h, out_w))
  for b in range(batch):
    for ho in range(out_h):
      for wo in range(out_w):
        columns = np.zeros((channels, kh, kw))
        for i in range(kh):
          for j in range(kw):
            t = i * kw + j
            h = ho * stride - 0 + i + offsets[b, 2 * t, ho, wo]
            w = wo * stride - 0 + j + offsets[b, 2 * t + 1, ho, wo]
            if not (h > -1 and w > -1 and h < height and w < width):
              continue
            h_low, w_low = int(np.floor(h)), int(np.floor(w))
            lh, lw = h - h_low, w - w_low
            for hh, ww, weight_ in ((h_low, w_low, (1 - lh) * (1 - lw)),
                                    (h_low, w_low + 1, (1 - lh) * lw),
                                    (h_low + 1, w_low, lh * (1 - lw)),
                                    (h_low + 1, w_low + 1, lh * lw)):
              if 0 <= hh <= height - 1 and 0 <= ww <= width - 1:
                columns[:, i, j] += weight_ * x[b, :, hh, ww]
        out[b, :, ho, wo] = np.einsum('cij,ocij->o', columns, weight) + bias
  return out


def test_golden_dtm_matches_the_cuda_definition():
  # The LIT golden's DCN (pure torch, tests/golden/official_env.py) and this op both equal
  # the CUDA kernel's formula on the golden's offsets (1-3 px, many samples off the map).
  from tests.helpers import family_golden  # pylint: disable=g-import-not-at-top
  g = family_golden.ops('lit')
  x = g['dtm_input'].reshape(2, 8, 8, 16)
  offsets = g['dtm_offsets']  # [B, 8, 4, 4], torch layout.
  weight, bias = g['dtm.dconv.weight'], g['dtm.dconv.bias']
  definition = dcn_cuda_definition(x.transpose(0, 3, 1, 2).astype(np.float64),
                                   offsets.astype(np.float64), weight, bias, 2)
  np.testing.assert_allclose(g['dtm_dconv'], definition, rtol=1e-5, atol=1e-5)
  for impl in IMPLS:
    ours = deform_conv.deform_conv(jnp.asarray(x), jnp.asarray(offsets.transpose(0, 2, 3, 1)),
                                   jnp.asarray(weight.transpose(2, 3, 1, 0)),
                                   jnp.asarray(bias), strides=(2, 2), padding=(0, 0), impl=impl)
    np.testing.assert_allclose(np.asarray(ours).transpose(0, 3, 1, 2), definition, rtol=1e-5,
                               atol=1e-5)
