"""LIT / LITv2 structure: parameter counts of the official constructors, FLOPs against the
papers, stage maps, dtypes, BatchNorm state, the build-size rule, the index buffers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax.models import lit

# sum(p.numel() for p in model.parameters()) of the official constructors (ziplab/LIT
# 742e961: `lit_ti()` and `LIT(...)` with configs/lit-*.yaml; ziplab/LITv2 7501c86: `LITv2(...)`
# with configs/litv2-*.yaml), and their BatchNorm running-statistic elements.
PARAMS = {
    'lit_ti': (19_886_272, 1920), 'lit_s': (27_973_720, 2688), 'lit_m': (49_372_264, 2688),
    'lit_b': (87_292_384, 3584), 'litv2_s': (27_844_000, 2688),
    'litv2_m': (48_830_368, 2688), 'litv2_b': (86_520_704, 3584),
}
# The papers' / READMEs' GFLOPs (multiply-adds) at 224.
PUBLISHED_GMACS = {'lit_ti': 3.6, 'lit_s': 4.1, 'lit_m': 8.6, 'lit_b': 15.0, 'litv2_s': 3.7,
                   'litv2_m': 7.5, 'litv2_b': 13.2}


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_param_count_equals_original(name):
  shapes = convert.expected_variables(models.create_model(name))
  counts = tuple(sum(math.prod(s) for s in shapes[c].values()) for c in ('params', 'batch_stats'))
  assert counts == PARAMS[name]


@pytest.mark.parametrize('name', sorted(PUBLISHED_GMACS))
def test_flops_near_published(name):
  gmacs = sum(models.flops_per_example(models.create_model(name)).values()) / 2e9
  assert abs(gmacs / PUBLISHED_GMACS[name] - 1) < 0.03, gmacs


@pytest.mark.parametrize('name', ['lit_s', 'litv2_s', 'lit_ti'])
def test_stage_maps_dtypes_and_batch_norm_state(name):
  model = models.create_model(name, embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8),
                              num_classes=7, image_size=64)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3)), jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(0), x)
  features = jax.jit(lambda v, x: model.apply(v, x, features_only=True))(variables, x)
  assert [f.shape for f in features] == [(2, 16, 16, 16), (2, 8, 8, 32), (2, 4, 4, 64),
                                         (2, 2, 2, 128)]
  logits, updates = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=['batch_stats'], rngs={'dropout': jax.random.key(1)}))(
          variables, x)
  assert logits.shape == (2, 7)
  assert all(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(updates['batch_stats']),
                                                    jax.tree.leaves(variables['batch_stats'])))
  bf16 = models.create_model(name, embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8),
                             num_classes=7, image_size=64, dtype='bfloat16', drop_path_rate=0.1)
  got, want = jax.jit(bf16.apply)(variables, x), jax.jit(model.apply)(variables, x)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, atol=0.15 * float(jnp.abs(want).max()) + 0.05)


def test_lit_runs_at_its_build_size_only():
  model = models.create_model('lit_s', image_size=64, embed_dims=(16, 32, 64, 128),
                              num_heads=(1, 2, 4, 8))
  with pytest.raises(ValueError, match='built for 64x64'):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 96, 96, 3),
                                                                       jnp.float32))


def test_relative_position_index_is_swins():
  # Brute force: (dy + H - 1) * (2W - 1) + dx + W - 1 for query i, key j.
  height, width = 3, 4
  index = lit.relative_position_index(height, width)
  for i in range(height * width):
    for j in range(height * width):
      (yi, xi), (yj, xj) = divmod(i, width), divmod(j, width)
      assert index[i, j] == (yi - yj + height - 1) * (2 * width - 1) + xi - xj + width - 1


def test_converter_refuses_an_index_buffer_unlike_the_models(tmp_path):
  from tests.helpers import family_golden  # pylint: disable=g-import-not-at-top
  name, overrides = family_golden.TINY['tiny_lit']
  state = convert.read_state_dict(str(family_golden.directory('tiny_lit') / 'tiny_lit.pth'),
                                  wrapper_keys=('model',))
  key = 'layers.2.blocks.0.attn.relative_position_index'
  bad = dict(state)
  bad[key] = state[key].copy()
  bad[key][0, 1] += 1
  model = models.create_model(name, **overrides)
  with pytest.raises(convert.ConversionError, match='relative_position_index .its values differ'):
    convert.convert_state_dict(bad, model)
  # num_batches_tracked is checked and dropped; the statistics go to batch_stats.
  variables = convert.convert_state_dict(state, model)
  stats = variables['batch_stats']['layers_0']['downsample']['norm_layer']
  np.testing.assert_array_equal(stats['var'],
                                state['layers.0.downsample.norm_layer.running_var'])
  # And back: the variables as the official state dict, buffers aside.
  back = convert.params_to_state_dict(variables, name)
  floats = {k for k, v in state.items() if v.dtype == np.float32}
  assert set(back) == floats
