"""AdamW (or SGD) with the official recipes' weight-decay mask and warmup + cosine schedule."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mvitv2_jax import models


def scaled_lr(value: float, batch_size: int) -> float:
  """The linear scaling rule: `value` is given per 256 images."""
  return value * batch_size / 256


def create_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
  """Linear warmup then cosine, evaluated at fractional epochs every step.

  Args:
    config: the run config (`config.optim.*`, `config.batch_size`).
    steps_per_epoch: optimizer updates per epoch.
    total_steps: updates of the whole run; the cosine reaches `min_lr` here.

  Returns:
    A function from the update count to the learning rate.
  """
  peak = scaled_lr(config.optim.base_lr, config.batch_size)
  start = scaled_lr(config.optim.warmup_start_lr, config.batch_size)
  end = scaled_lr(config.optim.min_lr, config.batch_size)
  warmup_steps = config.optim.warmup_epochs * steps_per_epoch
  # A run shorter than the warmup still ends its warmup before the last step.
  warmup_steps = min(warmup_steps, total_steps)
  cosine_steps = max(total_steps - warmup_steps, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warmup = start + (peak - start) * step / max(warmup_steps, 1e-8)
    progress = jnp.clip((step - warmup_steps) / cosine_steps, 0.0, 1.0)
    cosine = end + (peak - end) * 0.5 * (1 + jnp.cos(math.pi * progress))
    return jnp.where(step < warmup_steps, warmup, cosine)

  return schedule


def decay_mask(params, family: models.Family, no_decay_rel_pos_cls: bool = False):
  """True where weight decay applies.

  Args:
    params: a Flax params pytree (arrays or shape structs).
    family: the model's family (its position params and scanned-run layout).
    no_decay_rel_pos_cls: also exempt the family's position tables and tokens (rel-pos,
      position embeddings, the cls token: timm's choice); the official recipe decays them.

  Returns:
    A pytree of bools with the structure of `params`.
  """

  def decayed(path, leaf):
    # Every 1-D param is a bias or a norm's scale (ZERO_WD_1D_PARAM); scanned runs
    # stack their blocks' params on a leading axis.
    if leaf.ndim - family.stacked(path) <= 1:
      return False
    name = getattr(path[-1], 'key', str(path[-1]))
    return not (no_decay_rel_pos_cls and name in family.position_params)

  return jax.tree_util.tree_map_with_path(decayed, params)


def create_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW with decoupled (torch-style) decay, or SGD.

  `config.optim.name` 'sgd' is torch's SGD as PySlowFast uses it: L2 decay added to the
  gradient (same mask), Nesterov momentum `config.optim.momentum`.

  Args:
    config: the run config (`config.optim.*`, `config.model` for the decay mask).
    schedule: the learning-rate schedule.

  Returns:
    The optax transformation.
  """
  o = config.optim
  clip = (optax.clip_by_global_norm(o.grad_clip_norm)
          if o.grad_clip_norm > 0 else optax.identity())
  family = models.family_of(config.model)
  mask = lambda p: decay_mask(p, family, o.no_decay_rel_pos_cls)
  if o.name == 'sgd':
    return optax.chain(clip, optax.add_decayed_weights(o.weight_decay, mask),
                       optax.sgd(schedule, momentum=o.momentum, nesterov=True))
  if o.name != 'adamw':
    raise ValueError(f"optim.name must be 'adamw' or 'sgd', not {o.name!r}.")
  # optax's adamw subtracts lr * wd * param, the same update as torch.optim.AdamW.
  adamw = optax.adamw(
      schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=mask)
  return optax.chain(clip, adamw)
