"""The workdir lock and the config.json a resumed run must agree with."""

import json
import os
import signal
import subprocess
import sys

import pytest

from mvitv2_jax.train import workdir
from mvitv2_jax.train.errors import ConfigMismatchError, WorkdirBusyError
from tests.helpers import training

_HOLD_LOCK = ('import sys, time\n'
              'from mvitv2_jax.train import workdir\n'
              'lock = workdir.WorkdirLock(sys.argv[1])\n'
              'print("LOCKED", flush=True)\n'
              'time.sleep(600)\n')


def test_second_lock_names_the_holder(tmp_path):
  lock = workdir.WorkdirLock(str(tmp_path))
  try:
    with pytest.raises(WorkdirBusyError, match=rf'in use by another trainer \(pid '
                                               rf'{os.getpid()} on .* since '):
      workdir.WorkdirLock(str(tmp_path))
  finally:
    lock.release()
  workdir.WorkdirLock(str(tmp_path)).release()  # Free again once released.


@pytest.mark.slow
def test_lock_of_a_killed_process_does_not_block(tmp_path):
  proc = subprocess.Popen([sys.executable, '-c', _HOLD_LOCK, str(tmp_path)],
                          env=training.subprocess_env(), stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == 'LOCKED'
    with pytest.raises(WorkdirBusyError, match=f'pid {proc.pid} '):
      workdir.WorkdirLock(str(tmp_path))
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  workdir.WorkdirLock(str(tmp_path)).release()


def test_config_differing_on_a_field_that_matters_is_refused(tmp_path):
  workdir.write_config(training.tiny_config(), str(tmp_path))
  before = (tmp_path / 'config.json').read_bytes()
  with pytest.raises(ConfigMismatchError, match=r"batch_size 16 -> 8; optim.base_lr 0.03 "
                                                r"-> 0.1\. Resume with the same values"):
    workdir.check_config(training.tiny_config(batch_size=8, **{'optim.base_lr': 0.1}),
                         str(tmp_path))
  assert (tmp_path / 'config.json').read_bytes() == before


def test_fields_that_do_not_shape_the_run_may_change(tmp_path):
  workdir.write_config(training.tiny_config(), str(tmp_path))
  workdir.check_config(training.tiny_config(
      num_train_steps=50, log_every_steps=1, eval_batch_size=4, keep_checkpoints=1,
      shard_params=True), str(tmp_path))


def test_unreadable_config_json_is_refused(tmp_path):
  (tmp_path / 'config.json').write_text('{"model": ')
  with pytest.raises(ConfigMismatchError, match='config.json is unreadable'):
    workdir.check_config(training.tiny_config(), str(tmp_path))


def test_write_config_replaces_the_file_whole(tmp_path):
  workdir.write_config(training.tiny_config(), str(tmp_path))
  workdir.write_config(training.tiny_config(batch_size=8), str(tmp_path))
  assert json.loads((tmp_path / 'config.json').read_text())['batch_size'] == 8
  assert sorted(os.listdir(tmp_path)) == ['config.json']


def test_a_workdir_older_than_a_field_resumes_at_its_neutral_value(tmp_path):
  workdir.write_config(training.tiny_config(), str(tmp_path))
  saved = json.loads((tmp_path / 'config.json').read_text())
  del saved['optim']['ema_decay']  # As the trainer before the moving average wrote it.
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  workdir.check_config(training.tiny_config(), str(tmp_path))
  with pytest.raises(ConfigMismatchError, match=r'optim.ema_decay 0.0 -> 0.999'):
    workdir.check_config(training.tiny_config(**{'optim.ema_decay': 0.999}), str(tmp_path))
