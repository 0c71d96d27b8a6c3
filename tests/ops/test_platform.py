"""The kernel rule: 'auto' is resolved for the platform a program is lowered for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax import models
from mvitv2_jax import ops
from mvitv2_jax.ops import platform


def _lowered(fn, *args, target):
  return jax.jit(fn).trace(*args).lower(lowering_platforms=(target,)).as_text()


@pytest.mark.parametrize('target,windowed', [('cpu', False), ('tpu', True), ('cuda', True)])
def test_pooling_kernel_follows_the_lowering_platform(target, windowed):
  # Traced on this CPU host: a TPU or GPU program still gets XLA's windowed ops.
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 1, 4))
  text = _lowered(lambda x, w: ops.pool(x, 'conv', (3, 3), (2, 2), w)
                  + ops.pool(x, 'max', (3, 3), (2, 2)), x, w, target=target)
  assert ('stablehlo.convolution' in text) == windowed
  assert ('stablehlo.reduce_window' in text) == windowed
  assert ('stablehlo.slice' in text) != windowed


def test_whole_model_lowers_for_tpu_without_cpu_kernels():
  model = models.create_model('mvitv2_demo', image_size=32, embed_dim=8, depths=(1, 1))
  images = jnp.zeros((2, 32, 32, 3))
  params = jax.eval_shape(model.init, jax.random.key(0), images)
  text = _lowered(lambda p, x: model.apply(p, x), params, images, target='tpu')
  assert 'stablehlo.convolution' in text and 'stablehlo.reduce_window' in text


def test_resolve_names_the_kernel_per_platform():
  assert platform.resolve('pool', 'auto', 'cpu') == 'slices'
  assert platform.resolve('pool', 'auto', 'tpu') == 'conv'
  assert platform.resolve('attention', 'auto', 'cuda') == 'cudnn'
  assert platform.resolve('attention', 'auto', 'tpu') == 'pallas'
  assert platform.resolve('attention', 'auto', 'rocm') == 'xla'
  assert platform.resolve('attention', 'einsum', 'tpu') == 'einsum'


def test_under_a_mesh_only_its_platforms_kernel_is_traced():
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 1, 4))
  fn = lambda x, w: ops.pool(x, 'conv', (3, 3), (2, 2), w)
  assert 'cond' in str(jax.make_jaxpr(fn)(x, w))  # Staged out, chosen at lowering.
  mesh = jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  with jax.set_mesh(mesh):
    assert platform.mesh_platform() == 'cpu'
    jaxpr = str(jax.make_jaxpr(fn)(x, w))
  assert 'cond' not in jaxpr and 'conv_general_dilated' not in jaxpr


def test_compiler_options_apply_to_their_platform_only():
  class Device:
    def __init__(self, name):
      self.platform = name

  mesh = lambda name: type('Mesh', (), {'devices': np.array([Device(name)])})()
  assert platform.compiler_options(mesh('gpu')) == {'xla_gpu_enable_triton_gemm': False}
  assert platform.compiler_options(mesh('cpu')) == platform.compiler_options(mesh('tpu')) == {}
  options = platform.compiler_options(mesh('gpu'))
  options['extra'] = 1  # A copy: the table is not changed.
  assert 'extra' not in platform.COMPILER_OPTIONS['cuda']
