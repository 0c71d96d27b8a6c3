"""Kernels wrapped to partition under any sharding: values and gradients on 8 devices.

XLA's own dot-product attention stands in for the fused kernels (which need a TPU or a
GPU): the wrappers do not depend on what the kernel is, only on its VJP.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mvitv2_jax.ops import partitioning


def _kernel(q, k, v, *, width):
  """Attention whose output is narrower than v, as the padded kernels' are."""
  return jax.nn.dot_product_attention(q, k, v)[..., :width]


KERNEL = functools.partial(_kernel, width=6)
WRAPPERS = {'over_batch_and_heads': partitioning.over_batch_and_heads,
            'over_batch': partitioning.over_batch}


def _inputs():
  keys = jax.random.split(jax.random.key(0), 3)
  shapes = ((8, 16, 8, 8), (8, 12, 8, 8), (8, 12, 8, 8))  # [B, N, heads, d]
  return [jax.random.normal(key, shape) for key, shape in zip(keys, shapes)]


def _loss(kernel):
  return lambda q, k, v: jnp.sum(jnp.sin(kernel(q, k, v)))


@pytest.fixture(scope='module')
def mesh():
  return jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


@pytest.fixture(scope='module')
def reference():
  q, k, v = _inputs()
  return KERNEL(q, k, v), jax.grad(_loss(KERNEL), argnums=(0, 1, 2))(q, k, v)


def _check(results, reference):
  out, grads = results
  ref_out, ref_grads = reference
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  for grad, ref in zip(grads, ref_grads):
    np.testing.assert_allclose(grad, ref, atol=1e-5)


def _value_and_grads(wrapped):
  return jax.jit(lambda q, k, v: (wrapped(q, k, v),
                                  jax.grad(_loss(wrapped), argnums=(0, 1, 2))(q, k, v)))


@pytest.mark.parametrize('wrapper', sorted(WRAPPERS))
@pytest.mark.parametrize('spec', [P('data'), P(None, None, 'data'), P()],
                         ids=['batch', 'heads', 'replicated'])
def test_plain_jit_on_sharded_inputs(mesh, reference, wrapper, spec):
  wrapped = WRAPPERS[wrapper](KERNEL)
  inputs = [jax.device_put(x, NamedSharding(mesh, spec)) for x in _inputs()]
  fn = _value_and_grads(wrapped)
  _check(fn(*inputs), reference)
  compiled = fn.lower(*inputs).compile().as_text()
  if wrapper == 'over_batch_and_heads' or spec == P('data'):
    # Each device attends over its own shard: no tokens or channels gathered.
    assert 'all-gather' not in compiled and 'all-to-all' not in compiled


@pytest.mark.parametrize('wrapper', sorted(WRAPPERS))
def test_under_set_mesh(mesh, reference, wrapper):
  inputs = [jax.device_put(x, NamedSharding(mesh, P('data'))) for x in _inputs()]
  with jax.set_mesh(mesh):
    _check(_value_and_grads(WRAPPERS[wrapper](KERNEL))(*inputs), reference)


@pytest.mark.parametrize('wrapper', sorted(WRAPPERS))
def test_inside_shard_map(mesh, reference, wrapper):
  wrapped = WRAPPERS[wrapper](KERNEL)
  per_shard = jax.shard_map(
      lambda q, k, v: (wrapped(q, k, v), jax.grad(_loss(wrapped), argnums=(0, 1, 2))(q, k, v)),
      mesh=mesh, in_specs=(P('data'),) * 3, out_specs=(P('data'), (P('data'),) * 3),
      # Pallas kernels, which `over_batch` wraps, need it off; cuDNN's and XLA's do not.
      check_vma=wrapper == 'over_batch_and_heads')
  _check(jax.jit(per_shard)(*_inputs()), reference)


@pytest.mark.parametrize('wrapper', sorted(WRAPPERS))
def test_one_device_runs_the_kernel_as_it_is(reference, wrapper):
  _check(_value_and_grads(WRAPPERS[wrapper](KERNEL))(*_inputs()), reference)


def test_residual_axes_are_found_by_their_growth():
  q, k, v = (jax.ShapeDtypeStruct(x.shape, x.dtype) for x in _inputs())
  axes = partitioning._residual_axes(  # pylint: disable=protected-access
      KERNEL, (q.shape, k.shape, v.shape), jnp.dtype(jnp.float32))
  # XLA's attention saves q, k, v [B, N, heads, d] among its residuals.
  assert (0, 2) in axes and all(a in (0, 1, None) and b in (1, 2, None) for a, b in axes)
