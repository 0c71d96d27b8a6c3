"""Parity with the original LIT (ziplab/LIT: LIT-Ti, LIT-S/M/B) and LITv2 (ziplab/LITv2):
logits of the golden weights, the tiny official checkpoint files, and DTM, HiLo and LIT's
relative-position attention alone (tests/golden/lit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax import checkpoint
from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax.models import lit
from tests.helpers import family_golden
from tests.helpers import family_parity

VARIANTS = ('lit_ti', 'lit_s', 'lit_m', 'lit_b', 'litv2_s', 'litv2_m', 'litv2_b')
IN_CI = ('lit_s',)  # One full-size variant in CI's tier; `-m fullsize` runs them all.


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=() if n in IN_CI else (pytest.mark.fullsize,)) for n in VARIANTS])
def test_logits_match_original(name, tmp_path):
  fixed = models.variant_config(name).fixed_size
  errors = family_parity.check_full_size(name, tmp_path, fixed_size=fixed)
  assert max(errors.values()) < family_golden.TOLERANCE, errors


@pytest.mark.parametrize('name', ['tiny_lit', 'tiny_litv2', 'tiny_lit_ti'])
def test_tiny_official_files_convert_and_match(name):
  # tiny_lit: Swin's saver, {'model', 'optimizer', 'lr_scheduler', 'max_accuracy', 'epoch',
  # 'config': yacs CfgNode}; tiny_litv2: {'state_dict'}; tiny_lit_ti: DeiT's, the EMA
  # weights only, {'model_ema', 'epoch', 'args': argparse.Namespace}.
  model_name, overrides = family_golden.TINY[name]
  path = family_golden.directory(name) / f'{name}.pth'
  variables = convert.load_params(str(path), model_name, **overrides)
  model = models.create_model(model_name, **overrides)
  sizes = (64, 96) if name == 'tiny_litv2' else (64,)
  for size in sizes:
    logits = np.asarray(jax.jit(model.apply)(variables, family_golden.images(name, size)))
    err = np.abs(logits - family_golden.outputs(name)[f'logits_{size}']).max()
    print(f'{name} at {size}: max |logit diff| = {err:.2e}')
    assert err < family_golden.TOLERANCE, (size, err)
  whole = checkpoint.read(path)
  if name == 'tiny_lit':
    config = whole['config']
    assert isinstance(config, checkpoint.Record) and config.type_name == 'yacs.config.CfgNode'
    assert config['MODEL']['LIT']['DEPTHS'] == [1, 1, 2, 1]
    assert config['MODEL']['OFFSET_LR_MULTI'] == 0.01
    assert config.state['__immutable__'] is True
  if name == 'tiny_lit_ti':
    assert whole['args'].state['dconv_lr_ratio'] == 0.01


def _module(case, cfg):
  g = family_golden.ops('lit')
  state = {k: g[k] for k in g.files if k.startswith(case + '.')}
  return g, family_parity.module_variables(lit.FAMILY.checkpoint, state, case)


@pytest.mark.parametrize('impl', ['gather', 'one_hot'])
def test_dtm_matches_original(impl):
  cfg = lit.LITConfig(deform_impl=impl)
  g, variables = _module('dtm', cfg)
  x = jnp.asarray(g['dtm_input']).reshape(2, 8, 8, 16)
  out = lit.DeformableTokenMerging(32, cfg).apply(variables, x, False)
  np.testing.assert_allclose(np.asarray(out).reshape(2, 16, 32), g['dtm_output'], rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('case,dim,heads,alpha', [('hilo', 64, 4, 0.5),
                                                  ('hilo_alpha09', 120, 10, 0.9)])
def test_hilo_matches_original(case, dim, heads, alpha):
  cfg = lit.LITConfig(version=2)
  g, variables = _module(case, cfg)
  out = lit.HiLo(dim, heads, 2, alpha, cfg).apply(variables, jnp.asarray(g[f'{case}_input']),
                                                  (8, 8))
  np.testing.assert_allclose(out, g[f'{case}_output'], rtol=1e-5, atol=1e-5)


def test_relative_position_attention_matches_original():
  cfg = lit.LITConfig()
  g, variables = _module('relpos', cfg)
  out = lit.RelPosAttention(32, 2, (4, 4), cfg).apply(variables, jnp.asarray(g['relpos_input']))
  np.testing.assert_allclose(out, g['relpos_output'], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(lit.relative_position_index(4, 4), g['relpos.relative_position_index'])
