"""Export round trips: each artifact loaded back matches the Flax model's logits to 1e-5."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow as tf

from mvitv2_jax import convert
from mvitv2_jax import export
from mvitv2_jax import models
from mvitv2_jax import pretrained
from mvitv2_jax.data import imagenet
from mvitv2_jax.export import preprocess
from mvitv2_jax.export import stablehlo
from tests.helpers import golden
from tests.helpers import weights_server

TOLERANCE = 1e-5
# The exported program is other HLO than the model's jit (every platform's branch, another
# compile), so float32 rounding moves its logits by a few ulps of the largest one: up to
# 1.03e-5 on a clip whose largest |logit| is 11.8 (docs/export.md), 9e-7 of it.
LOGIT_SCALE_RTOL = 2e-6
# The SavedModel's erf is XLA's approximation spelled out (see `savedmodel`): float32
# rounding of logits up to ~15 then reaches 1.6e-5 (docs/export.md), 3e-6 relative.
SERVING_RTOL = 1e-5


def _assert_same_logits(got, want):
  """Equal to float32 rounding: 1e-5, or 2e-6 of the largest |logit| where that is more."""
  got, want = np.asarray(got), np.asarray(want)
  bound = max(TOLERANCE, LOGIT_SCALE_RTOL * float(np.abs(want).max()))
  np.testing.assert_allclose(got, want, rtol=0, atol=bound)


@pytest.fixture
def release(monkeypatch, tmp_path):
  """(image row, video row) of the tiny checkpoints, served from a local mirror."""
  image, video, files = weights_server.register_tiny(monkeypatch)
  with weights_server.mirror(monkeypatch, files, tmp_path / 'cache'):
    yield image, video


def _flax_logits(row, inputs):
  model = models.create_model(row.model, **row.model_overrides)  # The default kernels.
  params = pretrained.load_pretrained(row.name)
  return np.asarray(jax.jit(model.apply)({'params': params}, inputs))


def _uint8(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize('kind', ['image', 'video'])
def test_stablehlo_round_trip_at_two_batch_sizes(release, tmp_path, kind):
  row = release[0] if kind == 'image' else release[1]
  out = tmp_path / 'out'
  assert export.main(['--model', row.name, '--pretrained', '--format', 'stablehlo',
                      str(out)]) == 0
  restored = jax.export.deserialize(bytearray((out / 'model.stablehlo').read_bytes()))
  assert restored.platforms == ('cpu', 'cuda', 'tpu')
  inputs = golden.load('tiny')['input_nhwc'] if kind == 'image' else golden.load('tiny_v2')['input']
  for batch in (1, len(inputs)):
    got, want = np.asarray(restored.call(inputs[:batch])), _flax_logits(row, inputs[:batch])
    print(f'stablehlo {kind} batch {batch}: max |diff| {np.abs(got - want).max():.2e}')
    _assert_same_logits(got, want)
  meta = json.loads((out / 'model.json').read_text())
  assert meta['checkpoint'] == f'pretrained:{row.name}' and meta['num_classes'] == 10
  assert len((out / 'labels.txt').read_text().splitlines()) == 10


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['image', 'video'])
def test_savedmodel_serves_uint8_through_the_preprocessing(release, tmp_path, kind):
  row = release[0] if kind == 'image' else release[1]
  out = tmp_path / 'out'
  assert export.main(['--model', row.name, '--pretrained', '--format', 'savedmodel',
                      str(out)]) == 0
  loaded = tf.saved_model.load(str(out))
  frames = (row.frames,) if row.frames else ()
  for batch, (h, w) in ((1, (70, 90)), (3, (96, 80))):
    raw = tf.constant(_uint8((batch, *frames, h, w, 3), seed=batch))
    served = loaded.signatures['serving_default'](images=raw)
    inputs = loaded.signatures['preprocess'](images=raw)['inputs'].numpy()
    assert inputs.shape == (batch, *frames, row.resolution, row.resolution, 3)
    want = _flax_logits(row, inputs)
    diff = np.abs(served['logits'].numpy() - want).max()
    print(f'savedmodel {kind} uint8 batch {batch}: max |diff| {diff:.2e}, '
          f'max |logit| {np.abs(want).max():.1f}')
    np.testing.assert_allclose(served['logits'].numpy(), want, rtol=SERVING_RTOL,
                               atol=TOLERANCE)
    np.testing.assert_allclose(served['probabilities'].numpy().sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(loaded.signatures['logits'](inputs=inputs)['logits'].numpy(),
                               want, rtol=SERVING_RTOL, atol=TOLERANCE)


def test_image_preprocessing_is_the_evaluation_transform():
  spec = pretrained.get('mvitv2_s').preprocessing
  images = _uint8((2, 300, 400, 3))
  got = preprocess.preprocess(tf.constant(images), spec).numpy()
  for image, one in zip(images, got):
    np.testing.assert_allclose(one, imagenet.eval_transform(tf.constant(image), 224, 0.875),
                               atol=1e-5)


def test_bgr_checkpoints_get_reversed_channels_after_normalising():
  spec = pretrained.get('mvitv2_l_40x3.ssv2').preprocessing
  clip = np.zeros((1, 1, 312, 312, 3), np.uint8)
  clip[..., 0] = 255  # Red.
  got = preprocess.preprocess(tf.constant(clip), spec).numpy()[0, 0, 0, 0]
  mean, std = np.array(spec.mean), np.array(spec.std)
  np.testing.assert_allclose(got, ((np.array([1.0, 0, 0]) - mean) / std)[::-1], atol=1e-5)


def test_a_checkpoint_for_one_platform_uses_its_kernels(tmp_path):
  path = str(golden.DIR / 'tiny.pyth')
  with pytest.MonkeyPatch.context() as mp:
    from tests.helpers import variants  # pylint: disable=g-import-not-at-top
    variants.register(mp, 'mvitv2_test_tiny', dict(golden.TINY))
    out = tmp_path / 'out'
    assert export.main(['--model', 'mvitv2_test_tiny', '--checkpoint', path, '--format',
                        'stablehlo', '--platforms', 'cpu', str(out)]) == 0
    meta = json.loads((out / 'model.json').read_text())
    assert (meta['attention_impl'], meta['pool_impl']) == ('einsum', 'slices')
    restored = jax.export.deserialize(bytearray((out / 'model.stablehlo').read_bytes()))
    params = convert.load_params(path, 'mvitv2_test_tiny')
    x = golden.load('tiny')['input_nhwc']
    model = models.create_model('mvitv2_test_tiny')
    _assert_same_logits(restored.call(x), jax.jit(model.apply)({'params': params}, x))


def test_errors_are_one_line_and_write_nothing(tmp_path, capsys):
  out = tmp_path / 'out'
  assert export.main(['--model', 'mvitv2_t', '--checkpoint', str(tmp_path / 'none.pyth'),
                      '--format', 'stablehlo', str(out)]) == 1
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and not os.path.exists(out)
  os.makedirs(out)
  assert export.main(['--model', 'mvitv2_t', '--pretrained', '--format', 'stablehlo',
                      str(out)]) == 2
  assert 'already exists' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    export.main(['--model', 'mvitv2_q', '--pretrained', '--format', 'stablehlo',
                 str(tmp_path / 'x')])
  with pytest.raises(SystemExit):
    export.main(['--model', 'mvitv2_t', '--pretrained', '--format', 'onnx', str(tmp_path / 'x')])
  assert 'invalid choice' in capsys.readouterr().err


def test_stablehlo_of_a_batch_norm_family_uses_its_running_statistics():
  model = models.create_model('litv2_demo', **stablehlo.kernel_overrides(('cpu',)))
  inputs = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
  variables = jax.jit(model.init)(jax.random.key(0), inputs[:1])
  variables = {'params': variables['params'],
               'batch_stats': jax.tree.map(lambda x: x + 0.5, variables['batch_stats'])}
  exported = stablehlo.export(model, variables, ('cpu',))
  want = np.asarray(jax.jit(model.apply)(variables, inputs))
  _assert_same_logits(exported.call(inputs), want)
