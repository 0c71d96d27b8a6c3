"""Pooling kernels: the XLA:CPU slices against XLA's windowed ops, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax import ops


def test_max_pool_gradient_goes_to_the_first_maximum():
  # Ties (here: all equal) route each window's gradient to its first element in
  # row-major order, as PyTorch's max_pool2d and XLA's reduce_window gradient do.
  x = jnp.zeros((1, 4, 4, 1))
  for impl in ('conv', 'slices'):
    grad = jax.grad(lambda x: ops.pool(x, 'max', (3, 3), (2, 2), impl=impl).sum())(x)
    # Windows start at rows/cols -1 and 1: their first real elements are 0 and 1.
    np.testing.assert_array_equal(grad[0, :, :, 0], [[1, 1, 0, 0], [1, 1, 0, 0],
                                                    [0, 0, 0, 0], [0, 0, 0, 0]])


def _grads(x, weights, mode, kernel, strides, impl):
  def loss(x, weights):
    out = ops.pool(x, mode, kernel, strides, weights=weights, impl=impl)
    return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape)))
  return jax.value_and_grad(loss, argnums=(0, 1))(x, weights)


@pytest.mark.parametrize('mode', ['conv', 'max'])
@pytest.mark.parametrize('size,stride,kernel', [(8, 1, 3), (7, 2, 3), (9, 4, 3), (8, 2, 3),
                                                (6, 3, 5), (16, 4, 5), (17, 8, 9)])
@pytest.mark.parametrize('batch', [2, 11, 12])  # The weight gradient sums images in groups.
def test_pooling_slices_gradient_equals_the_windowed_ops(mode, size, stride, kernel, batch):
  # The slices' hand-written transposes (gathered taps) against XLA's own gradient of
  # the windowed ops, on odd and even sizes at every stride the models use; kernels wider
  # than 3 (ResT's reductions) sum their taps in one reduction.
  x = jax.random.normal(jax.random.key(0), (batch, size, size + 1, 3))
  weights = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, 3))
  want = _grads(x, weights, mode, (kernel,) * 2, (stride,) * 2, 'conv')
  got = _grads(x, weights, mode, (kernel,) * 2, (stride,) * 2, 'slices')
  for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mode,kernel,strides', [
    ('conv', (3, 3, 3), (1, 2, 2)), ('conv', (3, 3, 3), (1, 8, 8)), ('conv', (3, 3, 3), (2, 1, 1)),
    ('max', (1, 3, 3), (1, 2, 2)), ('max', (3, 3, 3), (2, 2, 2)),
])
def test_pooling_over_three_axes(mode, kernel, strides):
  # Spatiotemporal pooling: per-axis kernels and strides, padding k // 2 on each axis.
  x = jax.random.normal(jax.random.key(0), (2, 5, 9, 8, 4))
  weights = jax.random.normal(jax.random.key(1), (*kernel, 1, 4))
  want = _grads(x, weights, mode, kernel, strides, 'conv')
  got = _grads(x, weights, mode, kernel, strides, 'slices')
  for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-5, atol=1e-5)
  out = ops.pool(x, mode, kernel, strides, weights=weights)
  assert out.shape == (2, *(-(-n // s) for n, s in zip((5, 9, 8), strides)), 4)


def test_avg_pool_counts_the_padding():
  x = jnp.ones((1, 4, 4, 1))
  out = ops.pool(x, 'avg', (3, 3), (2, 2))
  # PyTorch AvgPool2d(3, 2, 1, count_include_pad=True): corner windows hold 4 ones of 9.
  np.testing.assert_allclose(out[0, :, :, 0], [[4 / 9, 6 / 9], [6 / 9, 1.0]], rtol=1e-6)


def test_unknown_kernel_and_mode_are_clear_errors():
  x = jnp.zeros((1, 4, 4, 2))
  with pytest.raises(ValueError, match="Unknown pool kernel 'fast'"):
    ops.pool(x, 'max', (3, 3), (2, 2), impl='fast')
  with pytest.raises(ValueError, match="Unknown pool mode 'min'"):
    ops.pool(x, 'min', (3, 3), (2, 2))
