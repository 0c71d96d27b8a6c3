"""The summary writer of a run: TensorBoard scalars from process 0."""

import os
from typing import Any, Mapping

import jax
import numpy as np


class SummaryWriter:
  """TensorBoard scalars, written with TensorFlow alone.

  `tf.summary.scalar` needs the `tensorboard` package, which is not a
  dependency; `tf.summary.write` with the scalars plugin's metadata gives the
  same event records. Only process 0 writes; elsewhere calls are no-ops.
  """

  def __init__(self, logdir: str):
    self._writer = None
    if jax.process_index() == 0:
      # Imported here: TensorFlow is slow to import and only process 0 writes.
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tf = tf
      self._writer = tf.summary.create_file_writer(os.fspath(logdir))
      self._metadata = tf.compat.v1.SummaryMetadata()
      self._metadata.plugin_data.plugin_name = 'scalars'

  def scalars(self, step: int, values: Mapping[str, Any]):
    """Writes `{name: scalar}` at `step`."""
    if self._writer is None:
      return
    with self._writer.as_default():
      for name, value in values.items():
        self._tf.summary.write(
            name, self._tf.constant(np.asarray(value).item(), self._tf.float32),
            step=step, metadata=self._metadata)
    self._writer.flush()

  def close(self):
    if self._writer is not None:
      self._writer.close()
