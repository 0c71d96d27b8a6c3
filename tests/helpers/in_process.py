"""Runs the trainer in the test process, recording its scalars; checkpoint files to corrupt."""

import os

from mvitv2_jax import train
from mvitv2_jax.train import integrity
from tests.helpers import synthetic_data
from tests.helpers import training


class RecordingWriter:
  """Stands in for `metrics.SummaryWriter`; keeps every scalar of the last run."""
  last = None

  def __init__(self, logdir):
    del logdir
    self.scalars_by_step = {}
    RecordingWriter.last = self

  def scalars(self, step, values):
    self.scalars_by_step.setdefault(step, {}).update(values)

  def close(self):
    pass


def train_tiny(workdir, data=synthetic_data, **overrides):
  """`train_and_evaluate` of `training.tiny_config(**overrides)`; (result, scalars by step)."""
  result = train.train_and_evaluate(training.tiny_config(**overrides), str(workdir),
                                    data=data, writer=RecordingWriter)
  return result, RecordingWriter.last.scalars_by_step


def largest_file(step_dir):
  """The largest data file of a checkpoint directory (its integrity record aside)."""
  files = [os.path.join(root, n) for root, _, names in os.walk(step_dir) for n in names
           if n != integrity.RECORD_FILE]
  return max(files, key=os.path.getsize)
