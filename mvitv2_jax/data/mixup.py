"""Mixup and CutMix with label smoothing, in JAX, for use inside the train step.

Follows timm's `Mixup` in batch mode: one mixing coefficient for the whole
global batch, the partner of example i is example B-1-i, targets are smoothed
one-hots mixed with the same coefficient, and CutMix corrects the coefficient by
the area of its clipped box. Everything is static-shaped, so it jits once.
"""

import jax
import jax.numpy as jnp


def smoothed_one_hot(labels: jax.Array, num_classes: int,
                     label_smoothing: float) -> jax.Array:
  """timm targets: off = ls / C, on = 1 - ls + ls / C.

  Args:
    labels: int [B].
    num_classes: C.
    label_smoothing: ls in [0, 1).

  Returns:
    float32 [B, C].
  """
  off = label_smoothing / num_classes
  on = 1.0 - label_smoothing + off
  return jnp.where(jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_), on, off)


def _cutmix_mask(rng: jax.Array, lam: jax.Array, height: int,
                 width: int) -> tuple[jax.Array, jax.Array]:
  """timm `rand_bbox` + `cutmix_bbox_and_lam(correct_lam=True)`.

  Args:
    rng: PRNG key for the box centre.
    lam: float32 [], the sampled coefficient.
    height: image height H.
    width: image width W.

  Returns:
    (in_box bool [H, W], corrected lam float32 []): pixels inside the box take
    the partner's values; lam is 1 - box area / image area.
  """
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = (height * ratio).astype(jnp.int32)
  cut_w = (width * ratio).astype(jnp.int32)
  key_y, key_x = jax.random.split(rng)
  cy = jax.random.randint(key_y, [], 0, height)
  cx = jax.random.randint(key_x, [], 0, width)
  # NOTE: like timm, the box spans 2 * (cut // 2) before clipping, not cut.
  y_lo = jnp.clip(cy - cut_h // 2, 0, height)
  y_hi = jnp.clip(cy + cut_h // 2, 0, height)
  x_lo = jnp.clip(cx - cut_w // 2, 0, width)
  x_hi = jnp.clip(cx + cut_w // 2, 0, width)
  rows = jax.lax.broadcasted_iota(jnp.int32, (height, width), 0)
  cols = jax.lax.broadcasted_iota(jnp.int32, (height, width), 1)
  in_box = (rows >= y_lo) & (rows < y_hi) & (cols >= x_lo) & (cols < x_hi)
  box_area = (y_hi - y_lo) * (x_hi - x_lo)
  return in_box, 1.0 - box_area / (height * width)


def sample_mix_weights(rng: jax.Array, height: int, width: int, *,
                       mixup_alpha: float, cutmix_alpha: float,
                       mixup_prob: float, cutmix_switch_prob: float
                       ) -> tuple[jax.Array, jax.Array]:
  """Draws the per-pixel weight of the original image and the target weight.

  Args:
    rng: PRNG key; the same key gives the same mixing on any device layout.
    height: image height H.
    width: image width W.
    mixup_alpha: Beta(alpha, alpha) for mixup; 0 disables mixup.
    cutmix_alpha: Beta(alpha, alpha) for cutmix; 0 disables cutmix.
    mixup_prob: probability of mixing the batch at all.
    cutmix_switch_prob: probability of cutmix when both are enabled.

  Returns:
    (pixel_weight float32 [H, W], lam float32 []): the mixed image is
    pixel_weight * x + (1 - pixel_weight) * x_partner; targets mix with lam.
  """
  if mixup_alpha <= 0 and cutmix_alpha <= 0:
    return jnp.ones((height, width), jnp.float32), jnp.ones([], jnp.float32)
  key_apply, key_switch, key_mix, key_cut, key_box = jax.random.split(rng, 5)
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(key_switch) < cutmix_switch_prob
  else:
    use_cutmix = jnp.asarray(cutmix_alpha > 0)
  # Beta needs a positive alpha even on the branch that is not taken.
  lam_mix = jax.random.beta(key_mix, max(mixup_alpha, 1e-3), max(mixup_alpha, 1e-3))
  lam_cut = jax.random.beta(key_cut, max(cutmix_alpha, 1e-3), max(cutmix_alpha, 1e-3))
  in_box, lam_cut = _cutmix_mask(key_box, lam_cut, height, width)
  apply = jax.random.uniform(key_apply) < mixup_prob
  lam = jnp.where(use_cutmix, lam_cut, lam_mix)
  pixel_weight = jnp.where(use_cutmix, (~in_box).astype(jnp.float32), lam_mix)
  lam = jnp.where(apply, lam, 1.0).astype(jnp.float32)
  pixel_weight = jnp.where(apply, pixel_weight, 1.0)
  return pixel_weight, lam


def mix_batch(rng: jax.Array, images: jax.Array, labels: jax.Array,
              num_classes: int, *, mixup_alpha: float, cutmix_alpha: float,
              mixup_prob: float, cutmix_switch_prob: float,
              label_smoothing: float) -> tuple[jax.Array, jax.Array]:
  """Mixes a global batch with its reverse and builds smoothed soft targets.

  Videos mix alike: one coefficient, and one CutMix box for all frames of a clip.

  Args:
    rng: PRNG key.
    images: float [B, H, W, C] or clips [B, T, H, W, C] (any float dtype; it is kept).
    labels: int [B].
    num_classes: C_out, number of classes.
    mixup_alpha: Beta(alpha, alpha) for mixup; 0 disables mixup.
    cutmix_alpha: Beta(alpha, alpha) for cutmix; 0 disables cutmix.
    mixup_prob: probability of mixing the batch at all.
    cutmix_switch_prob: probability of cutmix rather than mixup when both on.
    label_smoothing: smoothing folded into the targets.

  Returns:
    (images, same shape and dtype, targets float32 [B, C_out] summing to 1).
  """
  height, width = images.shape[-3:-1]
  pixel_weight, lam = sample_mix_weights(
      rng, height, width, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
      mixup_prob=mixup_prob, cutmix_switch_prob=cutmix_switch_prob)
  targets = smoothed_one_hot(labels, num_classes, label_smoothing)
  targets = lam * targets + (1.0 - lam) * targets[::-1]
  weight = pixel_weight.reshape((1,) * (images.ndim - 3) + (height, width, 1))
  weight = weight.astype(images.dtype)
  mixed = weight * images + (1 - weight) * images[::-1]
  return mixed, targets
