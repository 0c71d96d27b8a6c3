"""AdamW (or SGD) with the official recipes' weight-decay mask and warmup + cosine schedule,
and the learning-rate multipliers a family declares for some params (param groups)."""

import math
import re
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mvitv2_jax import models


def scaled_lr(value: float, batch_size: int) -> float:
  """The linear scaling rule: `value` is given per 256 images."""
  return value * batch_size / 256


def create_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int,
    peak_multiplier: float = 1.0
) -> optax.Schedule:
  """Linear warmup then cosine, evaluated at fractional epochs every step.

  Args:
    config: the run config (`config.optim.*`, `config.batch_size`).
    steps_per_epoch: optimizer updates per epoch.
    total_steps: updates of the whole run; the cosine reaches `min_lr` here.
    peak_multiplier: a param group's learning-rate multiplier. Only the peak is
      multiplied: timm's schedulers, which the ResT and LIT recipes run, give each group
      its own peak and the same warmup start and end.

  Returns:
    A function from the update count to the learning rate.
  """
  peak = scaled_lr(config.optim.base_lr, config.batch_size) * peak_multiplier
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


def lr_multipliers(params, family: models.Family):
  """Each param's learning-rate multiplier: the first of `family.lr_multipliers` whose
  pattern its '/'-joined path matches, else 1.0; a pytree of floats like `params`."""

  def multiplier(path, leaf):
    del leaf
    name = '/'.join(str(getattr(k, 'key', k)) for k in path)
    return next((m for pattern, m in family.lr_multipliers if re.search(pattern, name)), 1.0)

  return jax.tree_util.tree_map_with_path(multiplier, params)


def _update_rule(config: ml_collections.ConfigDict, schedule: optax.Schedule,
                 mask) -> optax.GradientTransformation:
  """AdamW with decoupled (torch-style) decay, or SGD with L2 decay, on `schedule`."""
  o = config.optim
  if o.name == 'sgd':
    return optax.chain(optax.add_decayed_weights(o.weight_decay, mask),
                       optax.sgd(schedule, momentum=o.momentum, nesterov=True))
  if o.name != 'adamw':
    raise ValueError(f"optim.name must be 'adamw' or 'sgd', not {o.name!r}.")
  # optax's adamw subtracts lr * wd * param, the same update as torch.optim.AdamW.
  return optax.adamw(
      schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=mask)


def create_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule,
    group_schedule: Callable[[float], optax.Schedule] | None = None
) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW with decoupled (torch-style) decay, or SGD.

  `config.optim.name` 'sgd' is torch's SGD as PySlowFast uses it: L2 decay added to the
  gradient (same mask), Nesterov momentum `config.optim.momentum`. Params the family
  gives a learning-rate multiplier (`Family.lr_multipliers`) form groups, as torch's param
  groups: each group has its own optimizer state and schedule; a family without
  multipliers has the single optimizer's state (its checkpoints' layout).

  Args:
    config: the run config (`config.optim.*`, `config.model` for the decay mask).
    schedule: the learning-rate schedule.
    group_schedule: multiplier -> the schedule of that group (`create_schedule`'s
      `peak_multiplier`); default: the multiple of `schedule`.

  Returns:
    The optax transformation.
  """
  o = config.optim
  clip = (optax.clip_by_global_norm(o.grad_clip_norm)
          if o.grad_clip_norm > 0 else optax.identity())
  family = models.family_of(config.model)
  mask = lambda p: decay_mask(p, family, o.no_decay_rel_pos_cls)
  if not family.lr_multipliers:
    return optax.chain(clip, _update_rule(config, schedule, mask))
  if group_schedule is None:
    group_schedule = lambda m: (lambda step: m * schedule(step))
  groups = {str(m): _update_rule(config, schedule if m == 1.0 else group_schedule(m), mask)
            for m in {1.0, *(m for _, m in family.lr_multipliers)}}
  labels = lambda params: jax.tree.map(str, lr_multipliers(params, family))
  return optax.chain(clip, optax.multi_transform(groups, labels))
