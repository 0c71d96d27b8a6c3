"""Model structure: parameter counts, block plan, shapes, sizes, dtypes, init."""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax.models import mvit
from tests.helpers import golden

TINY = golden.TINY

# Counts of the original PyTorch models at 224 (docs/parity.md: parameter counts).
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
    ('tiny_cls', 'mvitv2_t', golden.TINY_CLS),
])
def test_block_plan_matches_original(variant, name, overrides):
  want = json.loads((golden.DIR / f'config_{variant}.json').read_text())['blocks']
  specs = mvit.block_specs(models.variant_config(name, **overrides))
  assert len(specs) == len(want)
  for spec, block in zip(specs, want):
    assert (spec.dim_in, spec.dim_out, spec.att_dim, spec.num_heads) == (
        block['dim_in'], block['dim_out'], block['att_dim'], block['heads']), block['index']
    assert spec.q_stride == tuple(block['q_stride'])
    assert spec.kv_stride == tuple(block['kv_stride'])
    assert spec.rel_pos_lens == (block['rel_pos_len'],) * 2
    assert (max(spec.q_stride) > 1) == block['skip_maxpool']


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
  plain_model = models.create_model('mvitv2_t', **TINY)
  plain = jax.jit(lambda p, x: plain_model.apply({'params': p}, x))(params, images)
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
    return jax.jit(jax.grad(lambda p: model.apply({'params': p}, images).sum()))(params)

  # Under a mesh, as the trainer runs: the kernels are chosen while tracing (ops.platform).
  with jax.set_mesh(jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))):
    plain, rematerialised = grads(False), grads(True)
  for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(rematerialised)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('depths', [
    # MViTv2-S cut after blocks_3: Flax draws each param from its own path's RNG, so the
    # leaves checked here are MViTv2-S's own, bit for bit, at a quarter of the compile.
    (1, 2, 1, 1),
    pytest.param((1, 2, 11, 2), marks=(pytest.mark.slow, pytest.mark.fullsize)),
])
def test_init_follows_original(depths):
  model = models.create_model('mvitv2_s', depths=depths)
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
  """The logits and the gradient of their squared sum, from one compiled program."""
  model = models.create_model('mvitv2_t', **TINY, **impls)

  def loss(p):
    logits = model.apply({'params': p}, images)
    return (logits ** 2).sum(), logits

  grads, logits = jax.jit(jax.grad(loss, has_aux=True))(params)
  return logits, grads


@pytest.fixture(scope='module')
def reference_grads(tiny_golden):
  """The gradient of XLA's plain windowed ops and einsums, shared by every kernel case."""
  params, images = tiny_golden
  return _logits_and_grads(params, images, pool_impl='conv', attention_impl='einsum')[1]


@pytest.mark.parametrize('pool_impl', ['conv', 'slices'])
@pytest.mark.parametrize('attention_impl', ['einsum', 'dot_product', 'xla'])
def test_kernel_impls_agree_with_the_original(pool_impl, attention_impl, tiny_golden,
                                              reference_grads):
  # Every formulation gives the original's logits; all share one gradient, that of
  # XLA's plain windowed ops and einsums (pooling skip, conv pooling, attention).
  params, images = tiny_golden
  logits, grads = _logits_and_grads(params, images, pool_impl=pool_impl,
                                    attention_impl=attention_impl)
  np.testing.assert_allclose(logits, golden.load('tiny')['logits'], atol=1e-4)
  want = traverse_util.flatten_dict(reference_grads)
  # fp32 rounding, on the scale of the whole gradient: some leaves are zero up to
  # rounding (e.g. norm_k's bias, to which softmax is invariant).
  atol = 1e-5 * max(np.abs(g).max() for g in want.values())
  for path, got in traverse_util.flatten_dict(grads).items():
    np.testing.assert_allclose(got, want[path], rtol=1e-4, atol=atol, err_msg='/'.join(path))


@pytest.mark.parametrize('mode', ['avg', 'max'])
def test_pooling_ablation_modes(mode, tiny_golden):
  _, images = tiny_golden
  model = models.create_model('mvitv2_t', **TINY, pool_mode=mode)
  variables = jax.jit(model.init)(jax.random.key(0), images)
  attn = variables['params']['blocks_0']['attn']
  assert 'pool_q' not in attn and 'norm_q' not in attn  # No conv, no norm, as the original.
  logits = jax.jit(model.apply)(variables, images)
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


def test_remat_model_initialises_under_jit():
  # The trainer builds its state with jax.eval_shape and jax.jit over model.init.
  for overrides in (dict(remat=True), dict(remat=True, scan_blocks=True)):
    model = models.create_model('mvitv2_t', **TINY, **overrides)
    images = jnp.zeros((1, 64, 64, 3))
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)
    params = jax.jit(model.init)(jax.random.key(0), images)
    assert jax.tree.structure(shapes) == jax.tree.structure(params)


SCANNED = dict(embed_dim=8, depths=(2, 3, 3, 1), image_size=32, num_classes=10,
               drop_path_rate=0.2)


@pytest.fixture(scope='module')
def scanned_case():
  """(images, params) of the unscanned SCANNED model; remat does not change its params."""
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  plain = models.create_model('mvitv2_t', **SCANNED)
  return images, jax.jit(plain.init)(jax.random.key(0), images)['params']


@pytest.mark.parametrize('remat,remat_policy', [
    (False, ''), (True, ''), (True, 'dots_with_no_batch_dims_saveable')])  # The L/H configs'.
def test_scanned_blocks_compute_the_same_model(remat, remat_policy, scanned_case):
  from mvitv2_jax.models.mvit import stacking  # pylint: disable=g-import-not-at-top
  remat = dict(remat=remat, remat_policy=remat_policy)
  plain = models.create_model('mvitv2_t', **SCANNED, **remat)
  scanned = models.create_model('mvitv2_t', **SCANNED, **remat, scan_blocks=True)
  images, params = scanned_case
  stacked = stacking.stack(params, scanned.cfg)
  assert set(stacked) >= {'blocks_0_1', 'blocks_3_4', 'blocks_6_7'}
  assert stacked['blocks_3_4']['mlp']['fc1']['kernel'].shape == (2, 16, 64)
  assert jax.tree.structure(stacked) == jax.tree.structure(
      jax.eval_shape(scanned.init, jax.random.key(0), images)['params'])

  def loss(model, params):
    logits = model.apply({'params': params}, images, train=True,
                         rngs={'dropout': jax.random.key(2)})
    return jnp.sum(logits * jnp.arange(10)), logits

  with jax.set_mesh(jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))):
    forward = lambda model, params: jax.jit(model.apply)({'params': params}, images)
    np.testing.assert_allclose(forward(scanned, stacked), forward(plain, params),
                               rtol=1e-5, atol=1e-5)
    grads, _ = jax.jit(jax.grad(functools.partial(loss, scanned), has_aux=True))(stacked)
    # Drop path draws other masks in a scan (its RNG splits per step); without it the
    # gradients are the unscanned model's.
    no_drop = dict(SCANNED, drop_path_rate=0.0)
    plain0 = models.create_model('mvitv2_t', **no_drop, **remat)
    scanned0 = models.create_model('mvitv2_t', **no_drop, **remat, scan_blocks=True)
    want, _ = jax.jit(jax.grad(functools.partial(loss, plain0), has_aux=True))(params)
    got, _ = jax.jit(jax.grad(functools.partial(loss, scanned0), has_aux=True))(stacked)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  got = traverse_util.flatten_dict(stacking.unstack(jax.tree.map(np.asarray, got)))
  want = traverse_util.flatten_dict(want)
  atol = 1e-5 * max(np.abs(g).max() for g in want.values())  # fp32, at the gradient's scale.
  for path, leaf in got.items():
    np.testing.assert_allclose(leaf, want[path], rtol=1e-4, atol=atol, err_msg='/'.join(path))
