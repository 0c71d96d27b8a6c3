"""Parity with the original ResT and ResTv2 (wofmanaf/ResT): logits of the golden weights,
the tiny official checkpoint files, and EMSA alone (tests/golden/rest)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax import checkpoint
from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax.models import rest
from tests.helpers import family_golden
from tests.helpers import family_parity

VARIANTS = ('rest_lite', 'rest_small', 'rest_base', 'rest_large', 'restv2_tiny', 'restv2_small',
            'restv2_base', 'restv2_large')
IN_CI = ('rest_lite',)  # One full-size variant in CI's tier; `-m fullsize` runs them all.


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=() if n in IN_CI else (pytest.mark.fullsize,)) for n in VARIANTS])
def test_logits_match_original(name, tmp_path):
  errors = family_parity.check_full_size(name, tmp_path, fixed_size=False)
  assert max(errors.values()) < family_golden.TOLERANCE, errors


@pytest.mark.parametrize('name', ['tiny_rest', 'tiny_restv2'])
def test_tiny_official_files_convert_and_match(name):
  # Written by the official trainer's saver: {'model', 'optimizer', 'epoch', 'scaler',
  # 'args': argparse.Namespace} (tiny_restv2 also 'model_ema'), read without running code.
  model_name, overrides = family_golden.TINY[name]
  path = family_golden.directory(name) / f'{name}.pth'
  variables = convert.load_params(str(path), model_name, **overrides)
  assert set(variables) == {'params', 'batch_stats'}
  model = models.create_model(model_name, **overrides)
  for size in (64, 96):
    logits = np.asarray(jax.jit(model.apply)(variables, family_golden.images(name, size)))
    err = np.abs(logits - family_golden.outputs(name)[f'logits_{size}']).max()
    print(f'{name} at {size}: max |logit diff| = {err:.2e}')
    assert err < family_golden.TOLERANCE, (size, err)
  args = checkpoint.read(path)['args']
  assert isinstance(args, checkpoint.Record) and args.type_name == 'argparse.Namespace'
  assert args.state['model'] == name and args.state['betas'] == (0.9, 0.999)


@pytest.mark.parametrize('case,version,heads,sr', [('emsa_v1', 1, 2, 4),
                                                    ('emsa_v1_one_head', 1, 1, 2),
                                                    ('emsa_v2', 2, 2, 4)])
def test_emsa_matches_original(case, version, heads, sr):
  g = family_golden.ops('rest')
  state = {k: g[k] for k in g.files if k.startswith(case + '.')}
  variables = family_parity.module_variables(rest.FAMILY.checkpoint, state, case)
  cfg = rest.ResTConfig(version=version)
  out = rest.Attention(cfg, 32, heads, sr).apply(variables, jnp.asarray(g[f'{case}_input']),
                                                 (8, 8))
  np.testing.assert_allclose(out, g[f'{case}_output'], rtol=1e-5, atol=2e-5)
  assert float(g[f'{case}_spread']) < 1e-5  # The original's own fp32-vs-fp64 spread.
