"""Checkpoints: integrity records, fallback past corrupt steps, retention, best params."""

import json
import logging
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax.train import checkpointing
from mvitv2_jax.train import integrity
from mvitv2_jax.train.errors import CheckpointError
from tests.helpers import in_process


def _state(step):
  """A train state's fields, small."""
  params = {'w': jnp.full((64, 32), step, jnp.float32), 'b': jnp.arange(32, dtype=jnp.float32)}
  return {'step': jnp.int32(step), 'params': params,
          'opt_state': jax.tree.map(jnp.zeros_like, params), 'rng': jnp.zeros(2, jnp.uint32)}


def _abstract():
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      _state(0))


def _saved(workdir, steps, keep=3):
  ckpt = checkpointing.Checkpointer(str(workdir), keep)
  for step in steps:
    ckpt.save(step, _state(step))
  ckpt.close()


def _truncate(step_dir):
  path = in_process.largest_file(step_dir)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  return os.path.relpath(path, step_dir)


def _flip_byte(step_dir):
  path = in_process.largest_file(step_dir)
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0x01]))
  return os.path.relpath(path, step_dir)


def _delete_metadata(step_dir):
  os.remove(os.path.join(step_dir, '_METADATA'))
  return '_METADATA'


def _empty(step_dir):
  for name in os.listdir(step_dir):
    path = os.path.join(step_dir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  return integrity.RECORD_FILE


def test_save_writes_a_record_and_restores(tmp_path):
  _saved(tmp_path, [5, 10])
  assert integrity.verify(str(tmp_path / 'checkpoints' / '10')) == {'step': 10}
  ckpt = checkpointing.Checkpointer(str(tmp_path), 3)
  assert ckpt.latest_step() == 10
  state = ckpt.restore(10, _abstract())
  ckpt.close()
  np.testing.assert_array_equal(state['params']['w'], np.full((64, 32), 10))


@pytest.mark.parametrize('corrupt, reason', [
    (_truncate, r'has \d+ bytes, the record says \d+'),
    (_flip_byte, r'has other contents than recorded \(SHA-256 differs\)'),
    (_delete_metadata, r'is missing'),
    (_empty, r'integrity.json is missing: the checkpoint was never completed'),
])
def test_corrupt_latest_step_falls_back_to_the_newest_good_one(tmp_path, caplog, corrupt,
                                                               reason):
  _saved(tmp_path, [5, 10, 15])
  name = corrupt(str(tmp_path / 'checkpoints' / '15'))
  ckpt = checkpointing.Checkpointer(str(tmp_path), 3)
  with caplog.at_level(logging.WARNING):
    assert ckpt.latest_step() == 10
  state = ckpt.restore(10, _abstract())
  ckpt.close()
  assert int(state['step']) == 10
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10', '5']
  assert os.listdir(tmp_path / 'corrupt') == ['checkpoints-15']
  message = caplog.text
  assert 'Skipping the corrupt checkpoint checkpoints/15' in message
  assert os.path.join('checkpoints', '15', name) in message
  assert re.search(reason, message), message
  # Saving step 15 again works: the corrupt one is out of the way.
  _saved(tmp_path, [15])
  assert integrity.verify(str(tmp_path / 'checkpoints' / '15'))['step'] == 15


def test_a_finished_checkpoint_without_a_record_is_used_unverified(tmp_path, caplog):
  # Saved by a version without records, or stopped between the save and its record.
  _saved(tmp_path, [5, 10])
  os.remove(tmp_path / 'checkpoints' / '10' / integrity.RECORD_FILE)
  ckpt = checkpointing.Checkpointer(str(tmp_path), 3)
  with caplog.at_level(logging.WARNING):
    assert ckpt.latest_step() == 10
  assert 'has no integrity record' in caplog.text and 'unverified' in caplog.text
  state = ckpt.restore(10, _abstract())
  np.testing.assert_array_equal(state['params']['w'], np.full((64, 32), 10))
  assert not (tmp_path / 'corrupt').exists()
  # An unrecorded best/ has no known top-1: it stays until any evaluation replaces it.
  ckpt.save_best(10, state['params'], 0.5)
  os.remove(tmp_path / 'best' / '10' / integrity.RECORD_FILE)
  ckpt.close()
  ckpt = checkpointing.Checkpointer(str(tmp_path), 3)
  assert ckpt.best_step == 10
  ckpt.save_best(20, state['params'], 0.1)
  ckpt.close()
  assert os.listdir(tmp_path / 'best') == ['20']


def test_every_step_corrupt_means_no_checkpoint(tmp_path):
  _saved(tmp_path, [5])
  _truncate(str(tmp_path / 'checkpoints' / '5'))
  ckpt = checkpointing.Checkpointer(str(tmp_path), 3)
  assert ckpt.latest_step() is None
  ckpt.close()


def test_keep_counts_steps_and_leftovers_are_removed(tmp_path):
  _saved(tmp_path, [1, 2, 3, 4], keep=2)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['3', '4']
  # What a kill during a save or a delete leaves behind.
  os.makedirs(tmp_path / 'checkpoints' / '5.orbax-checkpoint-tmp-123')
  os.makedirs(tmp_path / 'checkpoints' / '2.deleting')
  checkpointing.Checkpointer(str(tmp_path), 2).close()
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['3', '4']


def test_best_top1_survives_a_restart(tmp_path):
  params = _state(1)['params']
  ckpt = checkpointing.Checkpointer(str(tmp_path), 3)
  ckpt.save_best(10, params, 0.5)
  ckpt.close()
  ckpt = checkpointing.Checkpointer(str(tmp_path), 3)
  assert (ckpt.best_step, ckpt.best_value) == (10, 0.5)
  ckpt.save_best(20, params, 0.4)  # Worse: best/ keeps step 10.
  assert os.listdir(tmp_path / 'best') == ['10']
  ckpt.save_best(30, params, 0.75)
  ckpt.close()
  assert os.listdir(tmp_path / 'best') == ['30']
  record = json.load(open(tmp_path / 'best' / '30' / integrity.RECORD_FILE))
  assert record['metadata'] == {'step': 30, 'top1': 0.75}


def test_two_best_dirs_after_a_crash_keep_the_better(tmp_path):
  params = _state(1)['params']
  ckpt = checkpointing.Checkpointer(str(tmp_path), 3)
  ckpt.save_best(10, params, 0.5)
  ckpt.close()
  os.rename(tmp_path / 'best' / '10', tmp_path / 'keep')
  ckpt = checkpointing.Checkpointer(str(tmp_path), 3)
  ckpt.save_best(20, params, 0.25)
  ckpt.close()
  os.rename(tmp_path / 'keep', tmp_path / 'best' / '10')
  ckpt = checkpointing.Checkpointer(str(tmp_path), 3)
  assert (ckpt.best_step, ckpt.best_value) == (10, 0.5)
  ckpt.close()
  assert os.listdir(tmp_path / 'best') == ['10']


def test_restore_params_verifies_and_reads_train_states(tmp_path):
  _saved(tmp_path, [5])
  params = checkpointing.restore_params(str(tmp_path / 'checkpoints' / '5'))
  np.testing.assert_array_equal(params['w'], np.full((64, 32), 5))
  _flip_byte(str(tmp_path / 'checkpoints' / '5'))
  with pytest.raises(CheckpointError, match='SHA-256 differs'):
    checkpointing.restore_params(str(tmp_path / 'checkpoints' / '5'))
