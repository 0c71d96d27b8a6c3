"""Tests for mvitv2_jax.mixup."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax.data import mixup

_RECIPE = dict(mixup_alpha=0.8, cutmix_alpha=1.0, mixup_prob=1.0,
               cutmix_switch_prob=0.5, label_smoothing=0.1)


def _batch(b=6, h=8, w=10):
  images = jax.random.normal(jax.random.key(0), (b, h, w, 3))
  return images, jnp.arange(b) % 4


@pytest.mark.parametrize('seed', range(4))
def test_shapes_targets_and_lambda(seed):
  images, labels = _batch()
  mixed, targets = mixup.mix_batch(jax.random.key(seed), images, labels, 5, **_RECIPE)
  chex.assert_shape(mixed, images.shape)
  chex.assert_shape(targets, (6, 5))
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
  # targets[i, labels[i]] = lam * on + (1 - lam) * [labels match] * on + off-terms.
  _, lam = mixup.sample_mix_weights(jax.random.key(seed), 8, 10, **{
      k: v for k, v in _RECIPE.items() if k != 'label_smoothing'})
  assert 0.0 <= float(lam) <= 1.0
  expected = mixup.smoothed_one_hot(labels, 5, 0.1)
  expected = lam * expected + (1 - lam) * expected[::-1]
  np.testing.assert_allclose(targets, expected, rtol=1e-6)


def test_cutmix_area_matches_lambda():
  images, labels = _batch()
  for seed in range(8):
    weight, lam = mixup.sample_mix_weights(
        jax.random.key(seed), 8, 10, mixup_alpha=0.0, cutmix_alpha=1.0,
        mixup_prob=1.0, cutmix_switch_prob=0.5)
    assert set(np.unique(weight).tolist()) <= {0.0, 1.0}
    # lam is corrected to the share of pixels kept from the original.
    np.testing.assert_allclose(float(lam), float(weight.mean()), rtol=1e-6)
    mixed, _ = mixup.mix_batch(jax.random.key(seed), images, labels, 5, mixup_alpha=0.0,
                               cutmix_alpha=1.0, mixup_prob=1.0, cutmix_switch_prob=0.5,
                               label_smoothing=0.0)
    box = weight == 0
    np.testing.assert_array_equal(mixed[:, box], images[::-1][:, box])
    np.testing.assert_array_equal(mixed[:, ~box], images[:, ~box])


def test_mixup_only_is_a_convex_blend():
  images, labels = _batch()
  mixed, targets = mixup.mix_batch(jax.random.key(3), images, labels, 5, mixup_alpha=0.8,
                                   cutmix_alpha=0.0, mixup_prob=1.0,
                                   cutmix_switch_prob=0.5, label_smoothing=0.0)
  lam = float(targets[0, labels[0]])  # labels[0] != labels[-1], and no smoothing.
  np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1], atol=1e-5)


@pytest.mark.parametrize('kwargs', [
    dict(mixup_alpha=0.0, cutmix_alpha=0.0, mixup_prob=1.0),
    dict(mixup_alpha=0.8, cutmix_alpha=1.0, mixup_prob=0.0),
])
def test_no_mixing_gives_smoothed_one_hot(kwargs):
  images, labels = _batch()
  mixed, targets = mixup.mix_batch(jax.random.key(0), images, labels, 5,
                                   cutmix_switch_prob=0.5, label_smoothing=0.1, **kwargs)
  np.testing.assert_array_equal(mixed, images)
  expected = np.full((6, 5), 0.1 / 5, np.float32)
  expected[np.arange(6), np.asarray(labels)] = 0.9 + 0.1 / 5
  np.testing.assert_allclose(targets, expected, rtol=1e-6)


def test_jits_once_and_keeps_dtype():
  images, labels = _batch()
  images = images.astype(jnp.bfloat16)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(rng, images, labels):
    return mixup.mix_batch(rng, images, labels, 5, **_RECIPE)

  for seed in range(3):
    mixed, targets = step(jax.random.key(seed), images, labels)
  assert mixed.dtype == jnp.bfloat16 and targets.dtype == jnp.float32


@pytest.mark.parametrize('seed', range(4))
def test_clips_mix_every_frame_as_one_image(seed):
  clips = jax.random.normal(jax.random.key(1), (6, 3, 8, 10, 3))  # [B, T, H, W, C]
  labels = jnp.arange(6) % 4
  mixed, targets = mixup.mix_batch(jax.random.key(seed), clips, labels, 5, **_RECIPE)
  chex.assert_shape(mixed, clips.shape)
  for t in range(3):  # One coefficient and one box for all frames.
    frame_mixed, frame_targets = mixup.mix_batch(
        jax.random.key(seed), clips[:, t], labels, 5, **_RECIPE)
    np.testing.assert_allclose(mixed[:, t], frame_mixed, rtol=1e-6)
    np.testing.assert_allclose(targets, frame_targets, rtol=1e-6)
