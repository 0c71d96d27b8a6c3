"""Top-k, masked eval sums and accumulation."""

import glob

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from mvitv2_jax.train import metrics


def test_topk_correct_and_ties():
  logits = jnp.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.0, 0.0, 0.0]])
  labels = jnp.array([1, 2, 1])
  np.testing.assert_array_equal(metrics.topk_correct(logits, labels, 1), [1, 0, 0])
  np.testing.assert_array_equal(metrics.topk_correct(logits, labels, 2), [1, 1, 1])


def test_eval_sums_ignore_masked_examples():
  logits = jnp.array([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
  labels = jnp.array([0, 1, 0])
  sums = metrics.eval_sums(logits, labels, jnp.array([True, True, False]))
  assert float(sums['count']) == 2
  assert float(sums['top1']) == 1
  expected = -np.log(np.exp(5) / (np.exp(5) + 1)) - np.log(1 / (np.exp(5) + 1))
  assert float(sums['loss']) == pytest.approx(expected, rel=1e-5)


def test_accumulator():
  acc = metrics.Accumulator()
  acc.add({'a': jnp.array(1.0)})
  acc.add({'a': jnp.array(3.0)})
  assert acc.sums() == {'a': 4.0}


def test_summary_writer_writes_tensorboard_scalars(tmp_path):
  writer = metrics.SummaryWriter(str(tmp_path))
  writer.scalars(7, {'train/loss': 1.25})
  writer.close()
  (path,) = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  values = [(e.step, v.tag, float(tf.make_ndarray(v.tensor)))
            for e in tf.compat.v1.train.summary_iterator(path)
            for v in e.summary.value]
  assert values == [(7, 'train/loss', 1.25)]
