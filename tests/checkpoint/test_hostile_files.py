"""Hostile checkpoints: each fails with one error line, bounded memory, no output.

Every file comes from tests/helpers/hostile_files.py, written at test time. The
subprocess tests run under an address-space limit, so a reader that tries to allocate
gigabytes fails the test instead of the machine: all the load_params and convert cases in
one process (`tests/helpers/load_checkpoints.py`) that runs each in a fork of its own.
"""

import json
import os
import re
import shutil
import sys
import time
import zipfile

import numpy as np
import pytest

from mvitv2_jax import checkpoint
from mvitv2_jax.checkpoint import CheckpointFormatError
from tests.helpers import golden
from tests.helpers import hostile_files
from tests.helpers import limited
from tests.helpers import pickle_ops
from tests.helpers import training

# jax and numpy reserve about 0.5 GB of address space; every hostile file asks for more
# than 1 GB once parsed naively.
ADDRESS_SPACE_MB = 3000
# The converter's own peak (imports, the model's shapes) is about 250 MB.
PEAK_RSS_MB = 400
TIMEOUT_S = 120
_CASES = sorted(hostile_files.CHECKPOINTS) + ['converted_without_metadata']
_CLI_CASES = ['nested_tuple_200k', 'byteorder_bomb', 'fifo', 'empty_orbax_directory']


@pytest.fixture(scope='module')
def hostile_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('hostile'))


def _write(case, directory):
  sub = os.path.join(directory, case)
  if os.path.exists(sub):
    shutil.rmtree(sub)
  os.makedirs(sub)
  if case == 'converted_without_metadata':
    path = os.path.join(sub, 'converted')
    from mvitv2_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
    checkpointing.save_params(path, {'head': {'bias': np.zeros(3, np.float32)}})
    os.remove(os.path.join(path, '_METADATA'))
    return path
  return hostile_files.CHECKPOINTS[case](sub)


@pytest.fixture(scope='module')
def batch(tmp_path_factory):
  """(kind, case) -> (limited.Result, path, args): every load and convert case, run at once."""
  directory = str(tmp_path_factory.mktemp('batch'))
  plan = {}
  for case in _CASES:
    path = _write(case, os.path.join(directory, 'load'))
    plan['load', case] = path, [path, hostile_files.BUILD_MARKER]
  for case in _CLI_CASES:
    path = _write(case, os.path.join(directory, 'convert'))
    output = os.path.join(directory, 'convert', case, 'out')
    plan['convert', case] = path, [path, output, '--model', 'mvitv2_t']
  plan_path, report_path = (os.path.join(directory, name) for name in ('plan.json', 'report'))
  with open(plan_path, 'w') as f:
    json.dump([{'name': '/'.join(key), 'kind': key[0], 'args': args}
               for key, (_, args) in plan.items()], f)
  run = limited.run(
      [sys.executable, '-m', 'tests.helpers.load_checkpoints', plan_path, report_path],
      address_space_mb=ADDRESS_SPACE_MB, timeout=TIMEOUT_S * len(plan),
      env=training.subprocess_env())
  assert run.returncode == 0 and not run.timed_out, run.stderr[-2000:]
  with open(report_path) as f:
    report = json.load(f)
  results = {}
  for key, (path, args) in plan.items():
    fields = report['/'.join(key)]
    del fields['own_peak_rss_mb']
    results[key] = limited.Result(**fields), path, args
  return results


def _assert_one_error_line(result, path):
  assert not result.timed_out, 'hung'
  assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  lines = result.error_lines
  assert len(lines) == 1 and len(result.stderr.splitlines()) == 1, result.stderr[-2000:]
  assert path in lines[0] and len(lines[0]) < 600, lines[0][:1000]
  assert result.peak_rss_mb < PEAK_RSS_MB, result.peak_rss_mb


@pytest.mark.slow
@pytest.mark.parametrize('case', _CASES)
def test_load_params_raises_one_line_error(batch, case):
  result, path, _ = batch['load', case]
  _assert_one_error_line(result, path)
  kind = result.error_lines[0].split(':')[1].strip()
  assert kind in ('CheckpointFormatError', 'ConversionError'), result.error_lines[0]


@pytest.mark.slow
@pytest.mark.parametrize('case', _CLI_CASES)
def test_convert_cli_fails_cleanly_and_writes_nothing(batch, case):
  result, path, args = batch['convert', case]
  _assert_one_error_line(result, path)
  assert not os.path.exists(args[1])


@pytest.mark.slow
def test_predict_refuses_a_hostile_checkpoint(hostile_dir, tmp_path):
  path = _write('nested_tuple_200k', hostile_dir)
  image = tmp_path / 'ok.png'
  hostile_files.png(image, 40, 30, rows=bytes(30 * 41))
  result = limited.run(
      [sys.executable, '-m', 'mvitv2_jax.predict', '--model', 'mvitv2_t', '--checkpoint', path,
       str(image)], address_space_mb=4000, timeout=TIMEOUT_S, env=training.subprocess_env())
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert len(result.error_lines) == 1 and path in result.error_lines[0]
  assert not result.stdout


# --- The rules, in process ----------------------------------------------------------


def _error(path, **kwargs) -> str:
  with pytest.raises(CheckpointFormatError) as info:
    checkpoint.read(path, **kwargs)
  message = str(info.value)
  assert message.startswith(f'{path}: ') and '\n' not in message
  return message


@pytest.mark.parametrize('case,pattern', [
    ('safetensors_duplicate_key', "repeats the key 'w'"),
    ('safetensors_overlap', "'b' at bytes \\[4, 12\\) overlaps"),
    ('safetensors_gap', "'b' at bytes \\[8, 12\\) leaves a gap"),
    ('safetensors_metadata_list', '__metadata__ is a list of 2 items, not a JSON object'),
    ('safetensors_metadata_value', "__metadata__\\['format'\\] is a dict of 1 items, not a str"),
    ('safetensors_deep_json', 'nests too deeply'),
    ('laughs_key', 'dict key that is a tuple of 2 items'),
    ('laughs_persistent_id', 'unexpected persistent id a tuple of 2 items'),
    ('build_on_rebuild', 'pickle sets the state of torch._utils._rebuild_tensor_v2'),
    ('stride0_250M', 'a strided tensor of size \\(250000000,\\) \\(1,000,000,000 bytes copied'),
    ('pkl_os_system', 'forbidden pickle global os.system'),
    ('pkl_builtins_eval', 'forbidden pickle global builtins.eval'),
    ('pkl_numpy_load', 'forbidden pickle global numpy.load'),
    ('pkl_reconstruct_dtype', '_reconstruct of numpy.dtype, not numpy.ndarray'),
    ('pkl_shape_1GiB', 'a numpy array of shape \\(268435456,\\) and dtype f4 '
                       '\\(1,073,741,824 bytes\\) would take more than'),
    ('pkl_shape_2_62', 'numpy array of shape \\(2147483648, 2147483648\\) is too large'),
    ('pkl_negative_dim', 'invalid numpy array shape \\(-1, 4\\)'),
    ('pkl_data_short', 'shape \\(4,\\) and dtype f4 takes 16 bytes; its data has 8'),
    ('pkl_data_long', 'shape \\(2,\\) and dtype f4 takes 8 bytes; its data has 16'),
    ('pkl_object_dtype', "numpy dtype 'O8' holds Python objects"),
    ('pkl_truncated', 'truncated or corrupt pickle \\(UnpicklingError: pickle truncated'),
    ('pkl_nested_150', 'pickle nests containers more than 100 deep'),
    ('pkl_nested_200k', "reading the pickle's objects would take more than"),
    ('fifo', 'a FIFO \\(named pipe\\), not a regular file'),
    ('plain_directory', 'a directory, not a regular file'),
])
def test_hostile_file_messages(tmp_path, case, pattern):
  path = hostile_files.CHECKPOINTS[case](str(tmp_path))
  message = _error(path)
  assert len(message) < 400
  assert re.search(pattern, message), message


def test_safetensors_header_larger_than_the_format_allows(tmp_path):
  path = tmp_path / 'big_header.safetensors'
  path.write_bytes((200_000_000).to_bytes(8, 'little') + b'{}')
  assert 'more than the format' in _error(path)


def test_nesting_deeper_than_the_limit(tmp_path):
  path = hostile_files.nested_tuple_key(str(tmp_path), depth=150)
  assert 'nests containers more than 100 deep' in _error(path)


def test_zip_directory_rules(tmp_path):
  pkl = pickle_ops.PROTO2 + pickle_ops.EMPTY_DICT + pickle_ops.STOP
  twice = hostile_files.write_zip(tmp_path / 'twice.pth',
                                  [hostile_files.Record('a/data.pkl', pkl)] * 2)
  assert 'lists a record twice' in _error(twice)
  bzip = hostile_files.write_zip(tmp_path / 'bzip.pth', [
      hostile_files.Record('a/data.pkl', pkl, method=zipfile.ZIP_BZIP2)])
  assert 'compression method 12' in _error(bzip)
  assert 'refusing a zip bomb' in _error(hostile_files.storage_bomb(str(tmp_path)))
  understated = _error(hostile_files.storage_bomb_understated(str(tmp_path)))
  assert 'Bad CRC-32' in understated  # Read only as far as declared, then checked.


def test_cap_and_environment_setting(tmp_path, monkeypatch):
  path = golden.DIR / 'tiny.pyth'
  assert 'the cap' in _error(path, max_bytes=100_000)
  monkeypatch.setenv(checkpoint.MAX_BYTES_ENV, '100000')
  assert 'the cap' in _error(path)
  monkeypatch.setenv(checkpoint.MAX_BYTES_ENV, 'lots')
  assert "MVITV2_MAX_CHECKPOINT_BYTES='lots' is not a number of bytes" in _error(path)
  monkeypatch.delenv(checkpoint.MAX_BYTES_ENV)
  assert checkpoint.read(path)['epoch'] == 299


def test_tensors_over_one_storage_are_views_of_it(tmp_path):
  state = checkpoint.read_state_dict(hostile_files.shared_storage(str(tmp_path), count=3, mib=1,
                                                                    deflated=False))
  first = state['w0']
  assert all(np.shares_memory(first, v) for v in state.values())
  assert first.flags.c_contiguous and first.flags.writeable


def test_missing_file(tmp_path):
  assert 'No such file or directory' in _error(tmp_path / 'nothing.pth')


@pytest.mark.slow
def test_reading_full_size_files_stays_fast(tmp_path):
  torch = pytest.importorskip('torch', reason='writes the file with torch.save')
  state_dict = golden.recipe_state_dict('s')
  path = tmp_path / 'MViTv2_S_in1k.pyth'
  torch.save({'epoch': 300, 'model_state': {k: torch.from_numpy(v) for k, v in state_dict.items()}},
             path)
  start = time.perf_counter()
  state = checkpoint.read_state_dict(path)
  assert time.perf_counter() - start < 10
  assert list(state) == list(state_dict)
  assert all(np.array_equal(state[k], v) for k, v in state_dict.items())

