"""Runs the trainer in the test process, recording its scalars; checkpoint files to corrupt."""

import os

import jax
import numpy as np

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


def one_device() -> list:
  """The devices of a test that does not test several: the first of the 8 simulated."""
  return jax.devices()[:1]


def train_tiny(workdir, data=synthetic_data, devices=None, **overrides):
  """`train_and_evaluate` of `training.tiny_config(**overrides)`; (result, scalars by step).

  Args:
    workdir: the run's workdir.
    data: the data source.
    devices: the devices to run on (default: one).
    **overrides: dotted config overrides.
  """
  result = train.train_and_evaluate(training.tiny_config(**overrides), str(workdir),
                                    data=data, writer=RecordingWriter,
                                    devices=devices or one_device())
  return result, RecordingWriter.last.scalars_by_step


def flat_params(params) -> dict[str, np.ndarray]:
  """Params on the host, keyed by their path (`jax.tree_util.keystr`)."""
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(params))}


def largest_file(step_dir):
  """The largest data file of a checkpoint directory (its integrity record aside)."""
  files = [os.path.join(root, n) for root, _, names in os.walk(step_dir) for n in names
           if n != integrity.RECORD_FILE]
  return max(files, key=os.path.getsize)
