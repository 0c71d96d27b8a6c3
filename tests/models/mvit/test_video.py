"""Spatiotemporal MViT (MViTv2 video, MViTv1) against PySlowFast: plan, counts, parity."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax.models import mvit
from tests.helpers import golden

# golden variant -> (model name, overrides) building the same architecture.
TINY_VIDEO = dict(embed_dim=8, depths=(1, 1, 2, 1), image_size=32, num_frames=4,
                  kv_stride=(1, 4, 4), num_classes=10)
VARIANTS = {
    'tiny_v2': ('mvitv2_s_16x4', TINY_VIDEO),
    # The tiny MViTv1 pools q in every block (its POOL_Q_STRIDE lists them all).
    'tiny_v1': ('mvit_b_16x4', dict(TINY_VIDEO, pool_q_every_block=True)),
    'v2_s16x4_k400': ('mvitv2_s_16x4', {}),
    'v2_b32x3_k400': ('mvitv2_b_32x3', {}),
    'v2_l40x3_k400': ('mvitv2_l_40x3', {}),
    'v1_b16x4_k400': ('mvit_b_16x4', {}),
    'v1_b16_in1k': ('mvit_b_16', {}),
}
TOLERANCE = 1e-4


def _config(variant):
  return json.loads((golden.VIDEO_DIR / f'config_{variant}.json').read_text())


def _count(model):
  return sum(int(np.prod(s)) for s in convert.expected_shapes(model).values())


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_param_count_equals_pyslowfast(variant):
  name, overrides = VARIANTS[variant]
  config = _config(variant)
  model = models.create_model(name, **overrides)
  assert _count(model) == config['param_count']
  assert model.cfg.num_classes == config['NUM_CLASSES']


@pytest.mark.parametrize('classes', [174, 600, 700])
def test_other_label_sets_change_only_the_head(classes):
  base = _config('v2_s16x4_k400')['param_count']
  model = models.create_model('mvitv2_s_16x4', num_classes=classes)
  assert _count(model) == base + (classes - 400) * (768 + 1)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_block_plan_matches_pyslowfast(variant):
  name, overrides = VARIANTS[variant]
  cfg = models.variant_config(name, **overrides)
  specs = mvit.block_specs(cfg)
  blocks = _config(variant)['blocks']
  axes = len(cfg.input_size)  # PySlowFast's image model keeps a T axis of 1.
  assert len(specs) == len(blocks)
  for spec, block in zip(specs, blocks):
    assert (spec.dim_in, spec.dim_out, spec.att_dim, spec.num_heads) == (
        block['dim_in'], block['dim_out'], block['att_dim'], block['heads']), block['index']
    assert spec.pool_q == (block['pool_q'] is not None), block['index']
    if spec.pool_q:
      assert spec.q_stride == tuple(block['pool_q']['stride'][-axes:]), block['index']
    assert spec.kv_stride == tuple(block['pool_k']['stride'][-axes:]), block['index']
    lens = tuple(block[f'rel_pos_{a}_len'] for a in 'thw'[-axes:])
    assert spec.rel_pos_lens == (lens if lens[0] is not None else ()), block['index']
    assert (max(spec.q_stride) > 1) == block['skip_pool'], block['index']


def _logits_and_block_outputs(model, params, x):
  """The logits and the output of every block (captured intermediates), in block order."""
  is_block = lambda module, method: (method == '__call__'
                                     and (module.name or '').startswith('blocks_'))
  logits, state = jax.jit(lambda p, x: model.apply({'params': p}, x,
                                                   capture_intermediates=is_block))(params, x)
  outputs = state['intermediates']
  return logits, [outputs[f'blocks_{i}']['__call__'][0] for i in range(len(outputs))]


@pytest.mark.parametrize('variant', ['tiny_v2', 'tiny_v1'])
def test_real_pyslowfast_files_give_the_original_logits(variant):
  # SlowFast's own save_checkpoint files, through the public converter.
  name, overrides = VARIANTS[variant]
  params = convert.load_params(str(golden.VIDEO_DIR / f'{variant}.pyth'), name, **overrides)
  outputs = golden.load(variant)
  model = models.create_model(name, **overrides)
  logits, blocks = _logits_and_block_outputs(model, params, outputs['input'])
  err = np.abs(np.asarray(logits) - outputs['logits']).max()
  print(f'{variant}: max |logit diff| = {err:.2e}')
  assert err < TOLERANCE
  # Per-block summaries: where a mismatch would start.
  for i, out in enumerate(blocks):
    np.testing.assert_allclose(out.mean(1), outputs[f'block{i}_mean'], atol=1e-4, err_msg=str(i))
    np.testing.assert_allclose(out[:, :16, :8], outputs[f'block{i}_head'], atol=1e-4,
                               err_msg=str(i))


# CI's tier checks one full-size MViT golden (tests/models/mvit/test_parity.py); these
# run with -m fullsize.
@pytest.mark.slow
@pytest.mark.fullsize
@pytest.mark.parametrize('variant', ['v2_s16x4_k400', 'v2_b32x3_k400', 'v1_b16x4_k400',
                                     'v1_b16_in1k', 'v2_l40x3_k400'])
def test_logits_match_pyslowfast(variant, tmp_path):
  name, overrides = VARIANTS[variant]
  checkpoint = tmp_path / f'{variant}.safetensors'
  golden.write_safetensors(checkpoint, golden.recipe_state_dict(variant))
  params = convert.load_params(str(checkpoint), name, **overrides)
  model = models.create_model(name, **overrides)
  logits = jax.jit(lambda p, x: model.apply({'params': p}, x))(params, golden.video_input(variant))
  err = np.abs(np.asarray(logits) - golden.load(variant)['logits']).max()
  print(f'{variant}: max |logit diff| = {err:.2e}')
  assert err < TOLERANCE


def test_features_only_gives_four_spatiotemporal_stage_maps():
  model = models.create_model('mvitv2_s_16x4')
  clips = jax.ShapeDtypeStruct((2, 16, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), clips)
  features = jax.eval_shape(lambda v, x: model.apply(v, x, features_only=True), variables, clips)
  assert [f.shape for f in features] == [(2, 8, 56, 56, 96), (2, 8, 28, 28, 192),
                                         (2, 8, 14, 14, 384), (2, 8, 7, 7, 768)]


def test_inputs_other_than_the_build_size_are_a_clear_error():
  name, overrides = VARIANTS['tiny_v2']
  model = models.create_model(name, **overrides)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4, 32, 32, 3)))
  with pytest.raises(ValueError, match=r'built for inputs of \(4, 32, 32\)'):
    jax.eval_shape(model.apply, variables, jnp.zeros((1, 8, 32, 32, 3)))
  with pytest.raises(ValueError, match=r'Expected videos \[B, T, H, W, 3\]'):
    jax.eval_shape(model.apply, variables, jnp.zeros((1, 32, 32, 3)))


def test_bf16_compute_stays_close_to_fp32():
  name, overrides = VARIANTS['tiny_v2']
  params = convert.load_params(str(golden.VIDEO_DIR / 'tiny_v2.pyth'), name, **overrides)
  clips = golden.load('tiny_v2')['input']
  run = lambda dtype: jax.jit(lambda p, x: models.create_model(
      name, **overrides, dtype=dtype).apply({'params': p}, x))(params, clips)
  want, got = np.asarray(run('float32')), np.asarray(run('bfloat16'))
  assert np.abs(got - want).max() < 0.02 * np.abs(want).max()
  assert np.array_equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.slow
def test_scanned_video_model_gives_the_same_logits():
  name, overrides = VARIANTS['tiny_v2']
  overrides = dict(overrides, depths=(1, 1, 3, 1))  # Blocks 3-4 form a scanned run.
  plain = models.create_model(name, **overrides)
  scanned = models.create_model(name, **overrides, scan_blocks=True)
  clips = golden.load('tiny_v2')['input']
  params = jax.jit(plain.init)(jax.random.key(0), clips)['params']
  from mvitv2_jax.models.mvit import stacking  # pylint: disable=g-import-not-at-top
  np.testing.assert_allclose(
      jax.jit(scanned.apply)({'params': stacking.stack(params, scanned.cfg)}, clips),
      jax.jit(plain.apply)({'params': params}, clips), rtol=1e-5, atol=1e-5)


def test_head_dropout_acts_in_training_only():
  name, overrides = VARIANTS['tiny_v2']
  model = models.create_model(name, **overrides, drop_path_rate=0.0)  # Only the head drops.
  assert model.cfg.head_dropout_rate == 0.5
  clips = golden.load('tiny_v2')['input']
  params = jax.jit(model.init)(jax.random.key(0), clips)['params']
  apply = jax.jit(lambda train, key: model.apply({'params': params}, clips, train=train,
                                                 rngs={'dropout': key}), static_argnums=0)
  np.testing.assert_array_equal(apply(False, jax.random.key(1)), apply(False, jax.random.key(2)))
  assert not np.allclose(apply(True, jax.random.key(1)), apply(True, jax.random.key(2)))
