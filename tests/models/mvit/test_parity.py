"""Parity with the original PyTorch MViTv2: logits it produced for the golden weights.

The weights are rebuilt from the recipe (tests/helpers/golden.py) under their official
names, written as an official-layout state dict file and loaded through the public
converter, exactly as a real checkpoint would be.
"""

import jax
import numpy as np
import pytest

from mvitv2_jax import convert
from mvitv2_jax import models
from tests.helpers import golden

TOLERANCE = 1e-4  # fp32 logits; the original's own fp32-vs-fp64 error is ~1e-5.

# golden file -> (model name, overrides) building the same architecture.
VARIANTS = {
    'tiny': ('mvitv2_t', golden.TINY),
    'tiny_cls': ('mvitv2_t', golden.TINY_CLS),
    't': ('mvitv2_t', {}),
    's': ('mvitv2_s', {}),
    'b': ('mvitv2_b', {}),
    'l': ('mvitv2_l', {}),
    'b_cls': ('mvitv2_b_cls', {}),
    # The same golden through scanned block runs (stacked params, one nn.scan per run).
    't-scan': ('mvitv2_t', {'scan_blocks': True}),
    'b_cls-scan': ('mvitv2_b_cls', {'scan_blocks': True}),
}
CLS_VARIANTS = ('tiny_cls', 'b_cls')


# The one full-size golden of CI's tier (the cheapest); the others run with -m fullsize.
CI_FULL_SIZE = 't'


def _marks(variant):
  if variant.startswith('tiny'):
    return ()
  if variant == CI_FULL_SIZE:
    return (pytest.mark.slow,)
  return (pytest.mark.slow, pytest.mark.fullsize)


def _golden_cases():
  for variant in VARIANTS:
    for cls_residual_q in ((False, True) if variant in CLS_VARIANTS else (False,)):
      yield pytest.param(variant, cls_residual_q, marks=_marks(variant),
                         id=f'{variant}{"-clsq" if cls_residual_q else ""}')


@pytest.mark.parametrize('variant,cls_residual_q', list(_golden_cases()))
def test_logits_match_original(variant, cls_residual_q, tmp_path):
  name, overrides = VARIANTS[variant]
  if variant in CLS_VARIANTS:
    overrides = {**overrides, 'cls_residual_q': cls_residual_q}
  model = models.create_model(name, **overrides)
  checkpoint = tmp_path / f'{variant}.safetensors'
  source = variant.removesuffix('-scan')
  golden.write_safetensors(checkpoint, golden.recipe_state_dict(source))
  params = convert.load_params(str(checkpoint), name, **overrides)
  outputs = golden.load(source)
  forward = jax.jit(lambda p, x: model.apply({'params': p}, x))
  small = 48 if variant.startswith('tiny') else 192
  suffix = '_clsq' if cls_residual_q else ''
  # The second size runs the model built for the first, as the original does.
  for images, logits in (('input_nhwc', 'logits'), (f'input_{small}', f'logits_{small}')):
    got = np.asarray(forward(params, outputs[images]))
    want = outputs[logits + suffix]
    err = np.abs(got - want).max()
    print(f'{variant}{suffix} {images}: max |logit diff| = {err:.2e}')
    assert got.shape == want.shape
    assert err < TOLERANCE, f'{variant}{suffix} {images}: max |logit diff| {err:.2e}'
