"""The classification task's metrics: top-k, masked eval sums and their means."""

import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax import tasks
from mvitv2_jax.tasks import classification


def test_topk_correct_and_ties():
  logits = jnp.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.0, 0.0, 0.0]])
  labels = jnp.array([1, 2, 1])
  np.testing.assert_array_equal(classification.topk_correct(logits, labels, 1), [1, 0, 0])
  np.testing.assert_array_equal(classification.topk_correct(logits, labels, 2), [1, 1, 1])


def test_eval_sums_ignore_masked_examples():
  logits = jnp.array([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
  labels = jnp.array([0, 1, 0])
  sums = classification.eval_sums(logits, labels, jnp.array([True, True, False]))
  assert float(sums['count']) == 2
  assert float(sums['top1']) == 1
  expected = -np.log(np.exp(5) / (np.exp(5) + 1)) - np.log(1 / (np.exp(5) + 1))
  assert float(sums['loss']) == pytest.approx(expected, rel=1e-5)


def test_sum_evaluator():
  acc = tasks.SumEvaluator()
  acc.add({'a': jnp.array(1.0)})
  acc.add({'a': jnp.array(3.0)})
  assert acc.result() == {'a': 4.0}


def test_evaluator_gives_means_per_example():
  evaluator = tasks.get('classification').evaluator(None)
  evaluator.add({'loss': jnp.array(3.0), 'top1': jnp.array(1.0), 'top5': jnp.array(2.0),
                 'count': jnp.array(2.0)})
  evaluator.add({'loss': jnp.array(1.0), 'top1': jnp.array(0.0), 'top5': jnp.array(1.0),
                 'count': jnp.array(2.0)})
  assert evaluator.result() == {'loss': 1.0, 'top1': 0.25, 'top5': 0.75, 'count': 4.0}
