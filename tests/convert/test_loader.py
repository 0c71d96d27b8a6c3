"""Converter: real checkpoint files of every format give the original's logits."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from mvitv2_jax import checkpoint
from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax.models.mvit import rel_pos
from tests.helpers import golden as golden_data
from tests.helpers import hostile_files
from tests.helpers import training
from tests.helpers import variants

DATA = golden_data.DIR
TINY = golden_data.TINY
TINY_CLS = golden_data.TINY_CLS


def logits(params, golden_name, images='input_nhwc', **overrides):
  model = models.create_model('mvitv2_t', **overrides)
  inputs = golden_data.load(golden_name)[images]
  return np.asarray(jax.jit(lambda p, x: model.apply({'params': p}, x))(params, inputs))


def golden(name, key):
  return golden_data.load(name)[key]


@pytest.mark.parametrize('filename', ['tiny.pyth', 'tiny_legacy.pyth', 'tiny_timm.pth',
                                      'tiny_timm.safetensors'])
def test_tiny_files_give_original_logits(filename):
  params = convert.load_params(str(DATA / filename), 'mvitv2_t', **TINY)
  err = np.abs(logits(params, 'tiny', **TINY) - golden('tiny', 'logits')).max()
  assert err < 1e-4, err


@pytest.mark.parametrize('filename', ['tiny_cls.pyth', 'tiny_cls_timm.pth',
                                      'tiny_cls_timm.safetensors'])
@pytest.mark.parametrize('cls_residual_q,want', [(False, 'logits'), (True, 'logits_clsq')])
def test_tiny_cls_files_give_original_logits(filename, cls_residual_q, want):
  overrides = dict(TINY_CLS, cls_residual_q=cls_residual_q)
  params = convert.load_params(str(DATA / filename), 'mvitv2_t', **overrides)
  err = np.abs(logits(params, 'tiny_cls', **overrides) - golden('tiny_cls', want)).max()
  assert err < 1e-4, err


def test_cli_writes_checkpoint_that_restores_to_the_same_logits(tmp_path, capsys):
  dst = tmp_path / 'converted'
  # The CLI knows the registered variants only; the tiny test architecture is passed
  # through load_params' overrides, so drive main() with a patched registry entry.
  with pytest.MonkeyPatch.context() as mp:
    variants.register(mp, 'mvitv2_test_tiny', TINY)
    assert convert.main([str(DATA / 'tiny.pyth'), str(dst), '--model', 'mvitv2_test_tiny']) == 0
    assert 'Converted' in capsys.readouterr().out
    params = convert.load_params(str(dst), 'mvitv2_test_tiny')
    # Exists already: refuses to overwrite.
    assert convert.main([str(DATA / 'tiny.pyth'), str(dst), '--model', 'mvitv2_test_tiny']) == 2
  err = np.abs(logits(params, 'tiny', **TINY) - golden('tiny', 'logits')).max()
  assert err < 1e-4, err
  assert not list(tmp_path.glob('*tmp*')), 'no partial checkpoint left behind'


@pytest.mark.slow
def test_cli_reports_bad_input_and_exits_nonzero(tmp_path):
  truncated = tmp_path / 'truncated.pyth'
  truncated.write_bytes((DATA / 'tiny.pyth').read_bytes()[:100_000])
  result = subprocess.run(
      [sys.executable, '-m', 'mvitv2_jax.convert', str(truncated), str(tmp_path / 'out'),
       '--model', 'mvitv2_t'], capture_output=True, text=True, env=training.subprocess_env())
  assert result.returncode == 1
  assert 'truncated' in result.stderr and 'Traceback' not in result.stderr
  assert not (tmp_path / 'out').exists()


def test_missing_unexpected_and_mismatched_keys_are_named():
  state_dict = checkpoint.read_state_dict(DATA / 'tiny.pyth')
  del state_dict['blocks.1.attn.qkv.bias']
  state_dict['blocks.9.mlp.fc1.weight'] = np.zeros((4, 4), np.float32)
  state_dict['norm.weight'] = np.ones(3, np.float32)
  with pytest.raises(convert.ConversionError) as e:
    convert.convert_state_dict(state_dict, models.create_model('mvitv2_t', **TINY))
  message = str(e.value)
  assert 'missing (1): blocks.1.attn.qkv.bias' in message
  assert 'unexpected (1): blocks.9.mlp.fc1.weight' in message
  assert 'norm.weight (3,) vs (64,)' in message


def test_wrong_variant_names_the_variant_it_looks_like():
  state_dict = golden_data.recipe_state_dict('t')
  with pytest.raises(convert.ConversionError, match='looks like mvitv2_t'):
    convert.convert_state_dict(state_dict, models.create_model('mvitv2_s'))


def test_new_label_set_needs_drop_head():
  with pytest.raises(convert.ConversionError, match='drop_head'):
    convert.load_params(str(DATA / 'tiny.pyth'), 'mvitv2_t', **dict(TINY, num_classes=5))
  params = convert.load_params(str(DATA / 'tiny.pyth'), 'mvitv2_t', drop_head=True,
                               **dict(TINY, num_classes=5))
  original = convert.load_params(str(DATA / 'tiny.pyth'), 'mvitv2_t', **TINY)
  assert params['head']['kernel'].shape == (64, 5) and not params['head']['bias'].any()
  np.testing.assert_array_equal(params['blocks_2']['attn']['qkv']['kernel'],
                                original['blocks_2']['attn']['qkv']['kernel'])


def test_other_build_size_resizes_rel_pos_tables():
  params = convert.load_params(str(DATA / 'tiny.pyth'), 'mvitv2_t', **dict(TINY, image_size=96))
  source = checkpoint.read_state_dict(DATA / 'tiny.pyth')['blocks.0.attn.rel_pos_h']
  table = params['blocks_0']['attn']['rel_pos_h']
  assert source.shape[0] == 31 and table.shape[0] == 47  # 2 * (64 / 4) - 1 -> 2 * (96 / 4) - 1
  np.testing.assert_allclose(table, rel_pos.resize_table(source, 47))
  model = models.create_model('mvitv2_t', **dict(TINY, image_size=96))
  out = jax.jit(model.apply)({'params': params}, np.zeros((1, 96, 96, 3), np.float32))
  assert out.shape == (1, 10) and np.isfinite(out).all()


def test_video_style_5d_conv_weights_are_squeezed():
  state_dict = checkpoint.read_state_dict(DATA / 'tiny.pyth')
  state_dict['patch_embed.proj.weight'] = state_dict['patch_embed.proj.weight'][:, :, None]
  params = convert.convert_state_dict(state_dict, models.create_model('mvitv2_t', **TINY))
  err = np.abs(logits(params, 'tiny', **TINY) - golden('tiny', 'logits')).max()
  assert err < 1e-4


def test_code_in_a_checkpoint_is_never_run(tmp_path):
  marker = tmp_path / 'pwned'

  class Exploit:
    def __reduce__(self):
      return (open, (str(marker), 'w'))

  import pickle
  path = tmp_path / 'evil.pth'
  path.write_bytes(pickle.dumps({'model_state': Exploit()}))
  with pytest.raises(checkpoint.CheckpointFormatError):
    convert.load_params(str(path), 'mvitv2_t')
  assert not marker.exists()


def test_torch_saved_full_size_pyth_gives_original_logits(tmp_path):
  torch = pytest.importorskip('torch', reason='torch is optional; the reader never needs it')
  state_dict = golden_data.recipe_state_dict('t')
  path = tmp_path / 'MViTv2_T_in1k.pyth'
  torch.save({'epoch': 300, 'model_state': {k: torch.from_numpy(v) for k, v in state_dict.items()}},
             path)
  params = convert.load_params(str(path), 'mvitv2_t')
  err = np.abs(logits(params, 't') - golden('t', 'logits')).max()
  assert err < 1e-4, err


def test_scanned_layout_converts_and_exports_strictly():
  # Blocks 4-7 of MViTv2-T form one scanned run: the converter stacks them, the export
  # (what reading a converted directory does) unstacks them, bit for bit.
  state_dict = golden_data.recipe_state_dict('t')
  scanned = convert.convert_state_dict(state_dict, models.create_model('mvitv2_t', scan_blocks=True))
  assert scanned['blocks_4_7']['attn']['qkv']['kernel'].shape == (4, 384, 1152)
  exported = convert.params_to_state_dict(scanned, 'mvitv2_t')
  assert list(sorted(exported)) == list(sorted(state_dict))
  for key, value in state_dict.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


@pytest.mark.parametrize('case,pattern', [
    ('plain_directory', 'a directory without an orbax _METADATA file'),
    ('empty_orbax_directory', 'a directory without an orbax _METADATA file'),
])
def test_directories_that_are_not_converted_checkpoints(tmp_path, case, pattern):
  path = hostile_files.CHECKPOINTS[case](str(tmp_path))
  with pytest.raises(convert.CheckpointFormatError, match=pattern) as info:
    convert.load_params(path, 'mvitv2_t')
  assert str(info.value).startswith(path)


def test_conversion_errors_are_one_line_and_name_the_file(tmp_path):
  path = hostile_files.shared_storage(str(tmp_path), count=3, mib=1, deflated=False)
  with pytest.raises(convert.ConversionError) as info:
    convert.load_params(path, 'mvitv2_t')
  message = str(info.value)
  assert message.startswith(f'{path}: Checkpoint does not fit') and '\n' not in message
  assert 'unexpected (3): w0, w1, w2' in message
