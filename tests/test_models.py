"""Model structure: parameter counts, block plan, shapes, sizes, dtypes, init."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn
from flax import traverse_util

from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax import rel_pos
import golden_recipe

DATA = pathlib.Path(__file__).parent / 'data'
TINY = dict(embed_dim=8, depths=(1, 1, 2, 1), image_size=64, num_classes=10)

# Counts of the original PyTorch models at 224 (MVITV2_REFERENCE.md §1.2).
PARAM_COUNTS = {
    ('mvitv2_t', 1000): 24_173_320,
    ('mvitv2_s', 1000): 34_870_216,
    ('mvitv2_b', 1000): 51_472_744,
    ('mvitv2_l', 1000): 217_992_952,
    ('mvitv2_b_cls', 1000): 51_472_840,
    ('mvitv2_l_cls', 1000): 213_635_512,
    ('mvitv2_h_cls', 1000): 666_879_912,
    ('mvitv2_b_cls', 19168): 65_444_032,
    ('mvitv2_l_cls', 19168): 234_583_216,
    ('mvitv2_h_cls', 19168): 694_804_128,
}


def count(model):
  return sum(math.prod(s) for s in convert.expected_shapes(model).values())


@pytest.mark.parametrize('name,classes', list(PARAM_COUNTS))
def test_param_count_equals_original(name, classes):
  assert count(models.create_model(name, num_classes=classes)) == PARAM_COUNTS[name, classes]


@pytest.mark.parametrize('variant,name,overrides', [
    ('t', 'mvitv2_t', {}), ('s', 'mvitv2_s', {}), ('b', 'mvitv2_b', {}), ('l', 'mvitv2_l', {}),
    ('b_cls', 'mvitv2_b_cls', {}), ('tiny', 'mvitv2_t', TINY),
    ('tiny_cls', 'mvitv2_t', dict(embed_dim=8, num_heads=2, depths=(2, 2, 2, 1),
                                  dim_mul_in_att=False, cls_token=True, image_size=64)),
])
def test_block_plan_matches_original(variant, name, overrides):
  want = json.loads((DATA / f'config_{variant}.json').read_text())['blocks']
  specs = models.block_specs(models.variant_config(name, **overrides))
  assert len(specs) == len(want)
  for spec, block in zip(specs, want):
    assert (spec.dim_in, spec.dim_out, spec.att_dim, spec.num_heads) == (
        block['dim_in'], block['dim_out'], block['att_dim'], block['heads']), block['index']
    assert spec.q_stride == block['q_stride'][0] and spec.kv_stride == block['kv_stride'][0]
    assert spec.rel_pos_len == block['rel_pos_len']
    assert (spec.q_stride > 1) == block['skip_maxpool']


def test_rel_pos_index_against_brute_force():
  for q, k in [(56, 14), (28, 28), (28, 14), (14, 28), (14, 14), (7, 14), (7, 7), (2, 3), (3, 2),
               (12, 3), (5, 7)]:
    got = rel_pos.rel_pos_index(q, k)
    for i in range(q):
      for j in range(k):
        qr, kr = max(k / q, 1.0), max(q / k, 1.0)
        assert got[i, j] == int(np.float32(np.float32(i * np.float32(qr)) - np.float32(j * np.float32(kr)))
                                + np.float32((k - 1) * kr)), (q, k, i, j)
  # The closed forms of the reference sheet at 224.
  i, j = np.arange(56)[:, None], np.arange(14)[None, :]
  np.testing.assert_array_equal(rel_pos.rel_pos_index(56, 14), i - 4 * j + 52)
  i, j = np.arange(14)[:, None], np.arange(28)[None, :]
  np.testing.assert_array_equal(rel_pos.rel_pos_index(14, 28), 2 * i - j + 27)


def test_resize_table_is_torch_linear_interpolation():
  table = np.arange(5, dtype=np.float32)[:, None] * np.array([[1.0, -2.0]], np.float32)
  np.testing.assert_array_equal(rel_pos.resize_table(table, 5), table)
  # F.interpolate(arange(5), size=10, mode='linear', align_corners=False), worked by hand.
  want = np.array([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4], np.float32)
  np.testing.assert_allclose(rel_pos.resize_table(table, 10)[:, 0], want, atol=1e-6)
  np.testing.assert_allclose(rel_pos.resize_table(table, 10)[:, 1], -2 * want, atol=1e-6)
  np.testing.assert_allclose(rel_pos.resize_table(table, 3)[:, 0], [1 / 3, 2, 11 / 3],
                             atol=1e-6)


def test_unknown_model_lists_known_names():
  with pytest.raises(ValueError, match='mvitv2_s.*|Known models.*mvitv2_s'):
    models.create_model('mvitv2_xl')
  with pytest.raises(ValueError, match='Unknown model options'):
    models.create_model('mvitv2_s', bogus=1)


@pytest.mark.parametrize('size', [224, 256, 384, 512])
def test_build_sizes(size):
  model = models.create_model('mvitv2_s', image_size=size)
  images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  logits = jax.eval_shape(model.apply, variables, images)
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
  table = variables['params']['blocks_0']['attn']['rel_pos_h']
  assert table.shape == (2 * (size // 4) - 1, 96)


def test_features_only_gives_four_stage_maps():
  model = models.create_model('mvitv2_b_cls')
  images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  features = jax.eval_shape(lambda v, x: model.apply(v, x, features_only=True), variables, images)
  assert [f.shape for f in features] == [(2, 56, 56, 96), (2, 28, 28, 192), (2, 14, 14, 384),
                                         (2, 7, 7, 768)]


def test_input_larger_than_build_size_is_a_clear_error():
  model = models.create_model('mvitv2_t', **TINY)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  with pytest.raises(ValueError, match='larger image_size'):
    jax.eval_shape(model.apply, variables, jnp.zeros((1, 96, 96, 3)))


@pytest.fixture(scope='module')
def tiny_golden():
  model = models.create_model('mvitv2_t', **TINY)
  state_dict = golden_recipe.recipe_state_dict(DATA / 'keys_tiny.json')
  params = convert.convert_state_dict(state_dict, model)
  return params, np.load(DATA / 'golden_tiny.npz')['input_nhwc']


def test_bf16_compute_stays_close_to_fp32(tiny_golden):
  params, images = tiny_golden
  fp32 = models.create_model('mvitv2_t', **TINY)
  bf16 = models.create_model('mvitv2_t', **TINY, dtype='bfloat16')
  want = jax.jit(lambda p, x: fp32.apply({'params': p}, x))(params, images)
  got = jax.jit(lambda p, x: bf16.apply({'params': p}, x))(params, images)
  assert got.dtype == jnp.float32
  # bf16 keeps 8 mantissa bits; logits here have std ~5. Stated tolerance: 2% of the range.
  err = np.abs(np.asarray(got) - np.asarray(want)).max()
  assert err < 0.02 * np.abs(np.asarray(want)).max(), err
  assert np.array_equal(np.argmax(got, -1), np.argmax(want, -1))


def test_bf16_params_stay_fp32():
  model = models.create_model('mvitv2_t', **TINY, dtype='bfloat16')
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))['params']
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype('float32')}


def test_drop_path_in_train_mode_only(tiny_golden):
  params, images = tiny_golden
  model = models.create_model('mvitv2_t', **TINY, drop_path_rate=0.5)
  apply = jax.jit(lambda p, x, train, rng: model.apply({'params': p}, x, train=train,
                                                        rngs={'dropout': rng}),
                  static_argnums=2)
  plain = models.create_model('mvitv2_t', **TINY).apply({'params': params}, images)
  np.testing.assert_allclose(apply(params, images, False, jax.random.key(0)), plain, atol=1e-5)
  a = apply(params, images, True, jax.random.key(1))
  b = apply(params, images, True, jax.random.key(1))
  c = apply(params, images, True, jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, plain) and not np.allclose(a, c)


def test_remat_gives_the_same_gradients(tiny_golden):
  params, images = tiny_golden

  def grads(remat):
    model = models.create_model('mvitv2_t', **TINY, remat=remat)
    return jax.grad(lambda p: model.apply({'params': p}, images).sum())(params)

  for a, b in zip(jax.tree_util.tree_leaves(grads(False)), jax.tree_util.tree_leaves(grads(True))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_init_follows_original():
  model = models.create_model('mvitv2_s')
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))['params']
  flat = {'/'.join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
  assert abs(flat['blocks_3/attn/qkv/kernel'].std() - 0.02) < 0.001
  assert abs(flat['head/kernel'].std() - 0.02) < 0.001
  assert abs(flat['blocks_3/attn/rel_pos_h'].std() - 0.02) < 0.002
  assert not flat['blocks_3/mlp/fc1/bias'].any()
  assert (flat['blocks_3/norm1/scale'] == 1).all() and not flat['blocks_3/norm1/bias'].any()
  # PyTorch's default conv init: U(+-1/sqrt(fan_in)), fan_in 9 for the pooling kernels.
  pool = flat['blocks_3/attn/pool_q']
  assert pool.shape == (3, 3, 1, 96) and np.abs(pool).max() <= 1 / 3
  assert np.abs(flat['patch_embed/kernel']).max() <= 1 / np.sqrt(3 * 49)


def _logits_and_grads(params, images, **impls):
  model = models.create_model('mvitv2_t', **TINY, **impls)
  loss = lambda p: (model.apply({'params': p}, images) ** 2).sum()
  logits = jax.jit(lambda p: model.apply({'params': p}, images))(params)
  return logits, jax.jit(jax.grad(loss))(params)


@pytest.mark.parametrize('pool_impl', ['conv', 'slices'])
@pytest.mark.parametrize('attention_impl', ['einsum', 'dot_product'])
def test_kernel_impls_agree_with_the_original(pool_impl, attention_impl, tiny_golden):
  # Every formulation gives the original's logits; all share one gradient, that of
  # XLA's plain windowed ops and einsums (pooling skip, conv pooling, attention).
  params, images = tiny_golden
  logits, grads = _logits_and_grads(params, images, pool_impl=pool_impl,
                                    attention_impl=attention_impl)
  np.testing.assert_allclose(logits, np.load(DATA / 'golden_tiny.npz')['logits'], atol=1e-4)
  _, want = _logits_and_grads(params, images, pool_impl='conv', attention_impl='einsum')
  want = traverse_util.flatten_dict(want)
  # fp32 rounding, on the scale of the whole gradient: some leaves are zero up to
  # rounding (e.g. norm_k's bias, to which softmax is invariant).
  atol = 1e-5 * max(np.abs(g).max() for g in want.values())
  for path, got in traverse_util.flatten_dict(grads).items():
    np.testing.assert_allclose(got, want[path], rtol=1e-4, atol=atol, err_msg='/'.join(path))


def test_max_pool_gradient_goes_to_the_first_maximum():
  # Ties (here: all equal) route each window's gradient to its first element in
  # row-major order, as PyTorch's max_pool2d and XLA's reduce_window gradient do.
  x = jnp.zeros((1, 4, 4, 1))
  for impl in ('conv', 'slices'):
    grad = jax.grad(lambda x: models.spatial_pool(x, 2, 3, 'max', impl=impl).sum())(x)
    # Windows start at rows/cols -1 and 1: their first real elements are 0 and 1.
    np.testing.assert_array_equal(grad[0, :, :, 0], [[1, 1, 0, 0], [1, 1, 0, 0],
                                                    [0, 0, 0, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_layer_norm_matches_flax(dtype):
  # Same params, outputs and gradients as the nn.LayerNorm the model used before.
  x = (3 * jax.random.normal(jax.random.key(0), (2, 5, 7, 16)) + 1).astype(dtype)
  ours = models.LayerNorm(dtype=dtype)
  flax_norm = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, dtype=dtype)
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(1), p.shape),
                        flax_norm.init(jax.random.key(2), x))
  assert jax.tree.structure(params) == jax.tree.structure(ours.init(jax.random.key(2), x))
  cotangent = jax.random.normal(jax.random.key(3), x.shape)

  def loss(module, params, x):
    return jnp.sum(module.apply(params, x).astype(jnp.float32) * cotangent)

  got, want = ours.apply(params, x), flax_norm.apply(params, x)
  assert got.dtype == want.dtype == dtype
  np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=1e-6, atol=1e-6)
  tol = 1e-5 if dtype == jnp.float32 else 1e-2
  for got, want in zip(jax.tree.leaves(jax.grad(loss, argnums=(1, 2))(ours, params, x)),
                       jax.tree.leaves(jax.grad(loss, argnums=(1, 2))(flax_norm, params, x))):
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol, atol=tol)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_gelu_matches_flax_exact_gelu(dtype):
  # The erf form against nn.gelu(approximate=False) (erfc), tails included.
  x = jnp.linspace(-12.0, 12.0, 4001).astype(dtype)
  got, want = models.gelu(x), nn.gelu(x, approximate=False)
  assert got.dtype == dtype
  tol = 1e-6 if dtype == jnp.float32 else 1e-2
  np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol, atol=tol)
  grad = lambda f: jax.vmap(jax.grad(lambda v: f(v).astype(jnp.float32)))(x)
  np.testing.assert_allclose(np.float32(grad(models.gelu)),
                             np.float32(grad(lambda v: nn.gelu(v, approximate=False))),
                             rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize('mode', ['conv', 'max'])
@pytest.mark.parametrize('size,stride,kernel', [(8, 1, 3), (7, 2, 3), (9, 4, 3), (8, 2, 3),
                                                (6, 3, 5)])
@pytest.mark.parametrize('batch', [2, 11, 12])  # The weight gradient sums images in groups.
def test_pooling_slices_gradient_equals_the_windowed_ops(mode, size, stride, kernel, batch):
  # The slices' hand-written transposes (gathered taps) against XLA's own gradient of
  # the windowed ops, on odd and even sizes at every stride the models use.
  x = jax.random.normal(jax.random.key(0), (batch, size, size + 1, 3))
  weights = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, 3))
  grads = {}
  for impl in ('conv', 'slices'):
    def loss(x, weights, impl=impl):
      out = models.spatial_pool(x, stride, kernel, mode, weights=weights, impl=impl)
      return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape)))
    grads[impl] = jax.grad(loss, argnums=(0, 1))(x, weights)
  for got, want in zip(grads['slices'], grads['conv']):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mode', ['avg', 'max'])
def test_pooling_ablation_modes(mode, tiny_golden):
  _, images = tiny_golden
  model = models.create_model('mvitv2_t', **TINY, pool_mode=mode)
  variables = model.init(jax.random.key(0), images)
  attn = variables['params']['blocks_0']['attn']
  assert 'pool_q' not in attn and 'norm_q' not in attn  # No conv, no norm, as the original.
  logits = model.apply(variables, images)
  assert logits.shape == (2, 10) and np.isfinite(logits).all()


def test_forward_compiles_once_under_jit(tiny_golden):
  params, images = tiny_golden
  model = models.create_model('mvitv2_t', **TINY)
  traces = []

  @jax.jit
  def forward(p, x):
    traces.append(1)
    return model.apply({'params': p}, x)

  for _ in range(3):
    forward(params, images + 1.0).block_until_ready()
  assert len(traces) == 1
