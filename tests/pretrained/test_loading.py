"""Released checkpoints by name: load_pretrained, create_model(pretrained=True) and the
commands, with a local HTTP server standing in for the original host."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from PIL import Image

from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax import predict
from mvitv2_jax import pretrained
from mvitv2_jax.pretrained import loading
from mvitv2_jax.train import validation
from mvitv2_jax.train.errors import ConfigError
from tests.helpers import checkpoint_files
from tests.helpers import golden
from tests.helpers import training
from tests.helpers import weights_server


@pytest.fixture
def release(monkeypatch, tmp_path):
  """(server, image row, video row) with the tiny checkpoints on a mirror, an empty cache."""
  image, video, files = weights_server.register_tiny(monkeypatch)
  with weights_server.mirror(monkeypatch, files, tmp_path / 'cache') as server:
    yield server, image, video


def _logits(model, params, x):
  return np.asarray(jax.jit(model.apply)({'params': params}, x))


def test_load_pretrained_downloads_converts_and_matches_the_original(release):
  _, image, _ = release
  params = pretrained.load_pretrained(image.name)
  expected = convert.load_params(pretrained.checkpoint_file(image.name), image.model)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, expected)
  outputs = golden.load('tiny')
  model = models.create_model(image.model, **image.model_overrides)
  np.testing.assert_allclose(_logits(model, params, outputs['input_nhwc']), outputs['logits'],
                             atol=1e-4, rtol=1e-4)


def test_converted_params_are_cached_and_reconverted_when_damaged(release, monkeypatch, capsys):
  _, image, _ = release
  first = pretrained.load_pretrained(image.name)
  converted = [os.path.join(root, n) for root, _, names in os.walk(pretrained.cache_dir())
               for n in names if n.endswith('.npz')]
  assert len(converted) == 1 and f'converted/{image.name}-' in converted[0]
  calls = []
  real = convert.load_params
  monkeypatch.setattr(convert, 'load_params', lambda *a, **k: calls.append(a) or real(*a, **k))
  again = pretrained.load_pretrained(image.name)
  assert calls == []  # A cache hit: no conversion.
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, first)
  with open(converted[0], 'r+b') as f:
    f.seek(200)
    f.write(b'\xff\xff')
  capsys.readouterr()
  fixed = pretrained.load_pretrained(image.name)
  assert 'converting again' in capsys.readouterr().err and len(calls) == 1
  jax.tree_util.tree_map(np.testing.assert_array_equal, fixed, first)
  assert len(pretrained.load_pretrained(image.name, num_classes=3)['head']['bias']) == 3


def test_create_model_pretrained_is_bound_to_the_weights(release):
  server, image, video = release
  model = models.create_model(image.name, pretrained=True)
  assert model.scope is not None  # Bound: model(images) runs (eagerly: jit it for speed).
  outputs = golden.load('tiny')
  module, variables = model.unbind()
  np.testing.assert_allclose(jax.jit(module.apply)(variables, outputs['input_nhwc']),
                             outputs['logits'], atol=1e-4, rtol=1e-4)
  clips = golden.load('tiny_v2')
  module, variables = models.create_model(video.name, pretrained=True).unbind()
  np.testing.assert_allclose(jax.jit(module.apply)(variables, clips['input']), clips['logits'],
                             atol=1e-4, rtol=1e-4)
  assert len(server.requests) == 2  # One download per file; the rest came from the cache.
  assert models.create_model(image.name, pretrained=True, num_classes=4).cfg.num_classes == 4


def test_label_names_of_the_label_sets():
  assert pretrained.label_names('mvitv2_s')[0] == 'tench, Tinca tinca (n01440764)'
  names = pretrained.label_names('mvitv2_s_16x4')
  assert len(names) == 400 and names[7] == 'class 7'
  assert len(pretrained.label_names('mvitv2_b_cls')) == 19168


def test_unknown_names_are_listed():
  with pytest.raises(pretrained.UnknownCheckpointError, match=r"'mvitv2_q'\. Known: mvitv2_t"):
    pretrained.load_pretrained('mvitv2_q')


def test_predict_pretrained_prints_imagenet_names(monkeypatch, tmp_path, capsys):
  # A 1000-class tiny checkpoint (the recipe weights with an ImageNet-sized head).
  image, _, _ = weights_server.tiny_rows()
  weights_server.register_tiny(monkeypatch)
  row = image.__class__(**{**image.__dict__, 'name': 'mvitv2_test_tiny.in1k',
                           'num_classes': 1000, 'url': image.url + '.safetensors'})
  weights_server.register_checkpoint(monkeypatch, row)
  state = golden.recipe_state_dict('tiny')
  state['head.projection.weight'] = golden.recipe('head.projection.weight', (1000, 64))
  state['head.projection.bias'] = golden.recipe('head.projection.bias', (1000,))
  path = tmp_path / 'tiny_in1k.safetensors'
  checkpoint_files.write_safetensors(path, {k: ('F32', v) for k, v in state.items()})
  files = {weights_server.TINY_IMAGE['path'] + '.safetensors': path.read_bytes()}
  jpeg = tmp_path / 'photo.jpg'
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), np.uint8)).save(jpeg)
  with weights_server.mirror(monkeypatch, files, tmp_path / 'cache'):
    capsys.readouterr()
    assert predict.main(['--pretrained', row.name, str(jpeg)]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == str(jpeg) and len(lines) == 6
  assert all('(n' in line for line in lines[1:])


def test_predict_pretrained_errors_are_one_line(release, tmp_path, capsys):
  server, image, _ = release
  server.faults[weights_server.TINY_IMAGE['path']] = weights_server.Fault(status=404)
  jpeg = tmp_path / 'photo.jpg'
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(jpeg)
  assert predict.main(['--pretrained', image.name, str(jpeg)]) == 1
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and err[0].startswith('error: http://127.0.0.1:')
  assert 'HTTP 404' in err[0] and 'save it as' in err[0]
  with pytest.raises(SystemExit):
    predict.main(['--pretrained', 'mvitv2_s_16x4', str(jpeg)])
  assert 'not a released image classifier' in capsys.readouterr().err


def test_convert_cli_takes_a_released_name(release, tmp_path):
  _, image, _ = release
  assert convert.main([f'pretrained:{image.name}', str(tmp_path / 'out')]) == 0
  params = convert.load_params(str(tmp_path / 'out'), image.model)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params,
                         pretrained.load_pretrained(image.name))


def test_init_from_names_a_released_checkpoint(release):
  _, image, _ = release
  config = training.tiny_config(init_from=f'pretrained:{image.name}')
  validation.validate(config)
  assert loading.resolve(config.init_from) == pretrained.checkpoint_file(image.name)
  config = training.tiny_config(init_from='pretrained:nope')
  with pytest.raises(ConfigError, match=r"init_from = 'pretrained:nope': No released"):
    validation.validate(config)


def test_the_pretrained_api_imports_no_tensorflow(tmp_path):
  # The cache already holds the file (placed by hand), so no server is needed.
  code = textwrap.dedent('''
      import sys
      from mvitv2_jax import models
      from mvitv2_jax.pretrained import download
      from tests.helpers import weights_server
      image, _, files = weights_server.tiny_rows()
      import pytest
      mp = pytest.MonkeyPatch()
      weights_server.register_tiny(mp)
      path = download.cached_path(image.url)
      import os
      os.makedirs(os.path.dirname(path))
      open(path, 'wb').write(files[weights_server.TINY_IMAGE['path']])
      model = models.create_model(image.name, pretrained=True)
      assert model.cfg.num_classes == 10
      assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'
      print('ok')
  ''')
  env = training.subprocess_env(MVITV2_CACHE=str(tmp_path))
  result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                          text=True, timeout=300, cwd=str(golden.DIR.parent.parent))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == 'ok'
