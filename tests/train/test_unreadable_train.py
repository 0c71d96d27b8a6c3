"""A run over a dataset with 1 % undecodable train records finishes, names them, resumes exactly."""

import logging

import jax
import numpy as np
import pytest

from mvitv2_jax import train
from mvitv2_jax.train import checkpointing
from tests.helpers import planted_data
from tests.helpers import training


class _Writer:
  """Keeps the scalars of the last run in `_Writer.last`."""
  last = {}

  def __init__(self, _):
    self.scalars_by_step = _Writer.last = {}

  def scalars(self, step, values):
    self.scalars_by_step.setdefault(int(step), {}).update(values)

  def close(self):
    pass


@pytest.fixture(scope='module')
def planted_dir(tmp_path_factory):
  return training.prepared_tfds(planted_data.MViTv2PlantedShapes.name, tmp_path_factory)


def _config(data_dir, steps):
  # 25 steps of 8 per epoch: 20 steps meet both bad train records, once each.
  return training.tiny_config(dataset=planted_data.MViTv2PlantedShapes.name,
                              data_dir=data_dir, batch_size=8, num_train_steps=steps,
                              shuffle_buffer=200, checkpoint_every_steps=5)


class _Killed(Exception):
  """Stands in for a kill right after a checkpoint."""


@pytest.mark.slow
def test_run_with_planted_bad_records_finishes_and_resumes_exactly(planted_dir, tmp_path,
                                                                     caplog, monkeypatch):
  with caplog.at_level(logging.WARNING):
    whole = train.train_and_evaluate(_config(planted_dir, 20), str(tmp_path / 'whole'),
                                     writer=_Writer)
  for index in planted_data.BAD_TRAIN_IMAGES:
    assert planted_data.record_name('train', index) in caplog.text
  assert planted_data.record_name('validation', 3) in caplog.text
  assert _Writer.last[20]['eval/unreadable'] == 1 and _Writer.last[20]['eval/count'] == 49
  save = checkpointing.Checkpointer.save

  def save_then_die(self, step, state):
    save(self, step, state)
    if step == 10:
      raise _Killed

  with monkeypatch.context() as patch:
    patch.setattr(checkpointing.Checkpointer, 'save', save_then_die)
    with pytest.raises(_Killed):
      train.train_and_evaluate(_config(planted_dir, 20), str(tmp_path / 'split'),
                               writer=_Writer)
  resumed = train.train_and_evaluate(_config(planted_dir, 20), str(tmp_path / 'split'),
                                     writer=_Writer)
  for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
