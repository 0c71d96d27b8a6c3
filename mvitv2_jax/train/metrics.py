"""Loss, top-k accuracy, on-device metric accumulation and a summary writer."""

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example soft-target cross-entropy.

  Args:
    logits: `[B, C]`.
    targets: `[B, C]` probabilities (mixed, smoothed labels).

  Returns:
    `[B]` float32 losses.
  """
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """`[B]` float32: 1 where `labels` is among the `k` highest logits."""
  # Rank = number of classes ranked above the label (no sort); ties go to the
  # lower class index, as with argmax, so constant logits are not all correct.
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  classes = jnp.arange(logits.shape[-1])
  above = (logits > label_logit) | (
      (logits == label_logit) & (classes < labels[:, None]))
  rank = jnp.sum(above, axis=-1)
  return (rank < k).astype(jnp.float32)


def eval_sums(logits: jax.Array, labels: jax.Array,
              mask: jax.Array) -> dict[str, jax.Array]:
  """Sums over unmasked examples of loss, top-1 and top-5, plus their count.

  Args:
    logits: `[B, C]`.
    labels: `[B]` int.
    mask: `[B]` bool; False for padding, which counts zero.

  Returns:
    Scalars `loss`, `top1`, `top5`, `count` (sums, not means).
  """
  mask = mask.astype(jnp.float32)
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  return {
      'loss': jnp.sum(cross_entropy(logits, targets) * mask),
      'top1': jnp.sum(topk_correct(logits, labels, 1) * mask),
      'top5': jnp.sum(topk_correct(logits, labels, 5) * mask),
      'count': jnp.sum(mask),
  }


class Accumulator:
  """Sums dicts of device scalars without syncing; reads them on demand."""

  def __init__(self):
    self._sums = None

  def add(self, values: Mapping[str, jax.Array]):
    """Adds one step's values (stays asynchronous on the device)."""
    if self._sums is None:
      self._sums = dict(values)
    else:
      self._sums = jax.tree.map(jnp.add, self._sums, dict(values))

  def sums(self) -> dict[str, float]:
    """Fetches the sums to the host."""
    if self._sums is None:
      return {}
    return {k: float(v) for k, v in jax.device_get(self._sums).items()}


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
