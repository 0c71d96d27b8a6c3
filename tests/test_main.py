"""main.py on bad command lines and configs: one `error:` line, no traceback, no files."""

import os
import subprocess
import sys

import pytest

from tests.helpers import training

pytestmark = pytest.mark.slow


def _main(*args):
  out = subprocess.run([sys.executable, 'main.py', *args], cwd=training.REPO_ROOT,
                       env=training.subprocess_env(), capture_output=True, text=True,
                       timeout=600, check=False)
  errors = [line for line in out.stderr.splitlines() if line.startswith('error: ')]
  assert 'Traceback' not in out.stderr + out.stdout, out.stderr
  assert len(errors) == 1, out.stderr
  return out.returncode, errors[0]


def test_config_file_typo_leaves_the_workdir_alone(tmp_path):
  (tmp_path / 'config.json').write_text('the run of before')
  code, error = _main('--config=configs/demo.pyy', f'--workdir={tmp_path}')
  assert (code, error) == (2, 'error: config file configs/demo.pyy: no such file')
  assert (tmp_path / 'config.json').read_text() == 'the run of before'
  assert os.listdir(tmp_path) == ['config.json']


@pytest.mark.parametrize('override, message', [
    ('--config.batchsize=4', 'error: config.batchsize is not a config field (did you mean '
                             'batch_size or eval_batch_size?); see configs/default.py'),
    ('--config.batch_size=-16', 'error: config.batch_size = -16: must be an integer >= 1'),
    ('--config.optim.base_lr=-1', 'error: config.optim.base_lr = -1.0: must be a number >= 0'),
    ('--config.image_size=100', 'error: config.image_size = 100: mvitv2_demo needs a multiple '
                                'of 32 (patch stride 4 x 2^3 for its 4 stages), e.g. 96 or 128'),
    ('--config.batch_size=abc', 'error: flag --config.batch_size=abc:'),
])
def test_bad_field_is_refused_before_anything_is_written(tmp_path, override, message):
  code, error = _main('--config=configs/demo.py', override, f'--workdir={tmp_path / "run"}')
  assert code == 2
  assert error.startswith(message), error
  assert not os.path.exists(tmp_path / 'run')


def test_unreadable_init_from_is_one_line(tmp_path):
  bad = tmp_path / 'weights.pth'
  bad.write_bytes(b'not a checkpoint at all')
  code, error = _main('--config=configs/demo.py', f'--config.init_from={bad}',
                      f'--workdir={tmp_path / "run"}', '--config.num_train_steps=1')
  assert code == 1
  assert error.startswith('error: ') and str(bad) in error, error
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
