"""Checks every config field before a run touches anything.

`validate(config)` needs no devices and no data; `check_batch_sizes` runs once the
device count is known. Both raise `errors.ConfigError` with one line naming the field,
its value and what is allowed.
"""

import difflib
import numbers
import os
from typing import Any, Callable

import ml_collections

from mvitv2_jax import convert
from mvitv2_jax import model as mvit
from mvitv2_jax.train.errors import ConfigError

_DTYPES = ('float32', 'bfloat16', 'float16')
_MODES = ('train', 'eval')


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_at_least(low: int) -> Callable[[Any], str | None]:
  def check(value):
    if not (_is_int(value) and value >= low):
      return f'must be an integer >= {low}'
    return None
  return check


def _count_or_unset(value) -> str | None:
  if not (_is_int(value) and (value == -1 or value >= 1)):
    return 'must be -1 (unset) or an integer >= 1'
  return None


def _real_in(low: float, high: float, *, low_open=False, high_open=False):
  interval = f'{"(" if low_open else "["}{low:g}, {high:g}{")" if high_open else "]"}'

  def check(value):
    ok = _is_real(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    return None if ok else f'must be a number in {interval}'
  return check


def _real_at_least(low: float, *, low_open=False):
  def check(value):
    if not (_is_real(value) and (value > low if low_open else value >= low)):
      return f'must be a number {">" if low_open else ">="} {low:g}'
    return None
  return check


def _one_of(choices) -> Callable[[Any], str | None]:
  def check(value):
    return None if value in choices else f'must be one of {", ".join(map(repr, choices))}'
  return check


def _boolean(value) -> str | None:
  return None if isinstance(value, bool) else 'must be True or False'


def _string(value) -> str | None:
  return None if isinstance(value, str) else 'must be a string'


def _name(value) -> str | None:
  return None if isinstance(value, str) and value else 'must be a non-empty string'


def _config_dict(value) -> str | None:
  if isinstance(value, ml_collections.ConfigDict):
    return None
  return 'must be a ConfigDict of MViTv2Config fields'


# One rule per field of configs/default.py; a field without a rule is refused.
_RULES = {
    'model': _one_of(mvit.model_names()),
    'num_classes': _int_at_least(1),
    'image_size': _int_at_least(1),
    'drop_path_rate': _real_in(0, 1, high_open=True),
    'dtype': _one_of(_DTYPES),
    'model_overrides': _config_dict,
    'dataset': _name,
    'data_dir': _string,
    'train_split': _name,
    'eval_split': _name,
    'batch_size': _int_at_least(1),
    'eval_batch_size': _int_at_least(1),
    'shuffle_buffer': _int_at_least(1),
    'eval_crop_pct': _real_in(0, 1, low_open=True),
    'num_train_examples': _count_or_unset,
    'num_eval_examples': _count_or_unset,
    'aug': _config_dict,
    'aug.min_crop_scale': _real_in(0, 1, low_open=True),
    'aug.flip': _boolean,
    'aug.randaugment_num_ops': _int_at_least(0),
    'aug.randaugment_magnitude': _real_in(0, 10),
    'aug.randaugment_magnitude_std': _real_at_least(0),
    'aug.random_erase_prob': _real_in(0, 1),
    'aug.mixup_alpha': _real_at_least(0),
    'aug.cutmix_alpha': _real_at_least(0),
    'aug.mixup_prob': _real_in(0, 1),
    'aug.cutmix_switch_prob': _real_in(0, 1),
    'aug.label_smoothing': _real_in(0, 1, high_open=True),
    'optim': _config_dict,
    'optim.name': _one_of(('adamw', 'sgd')),
    'optim.momentum': _real_in(0, 1, high_open=True),
    'optim.base_lr': _real_at_least(0),
    'optim.warmup_start_lr': _real_at_least(0),
    'optim.min_lr': _real_at_least(0),
    'optim.warmup_epochs': _real_at_least(0),
    'optim.weight_decay': _real_at_least(0),
    'optim.b1': _real_in(0, 1, high_open=True),
    'optim.b2': _real_in(0, 1, high_open=True),
    'optim.eps': _real_at_least(0, low_open=True),
    'optim.grad_clip_norm': _real_at_least(0),
    'optim.no_decay_rel_pos_cls': _boolean,
    'optim.grad_accum_steps': _int_at_least(1),
    'mode': _one_of(_MODES),
    'init_from': _string,
    'init_drop_head': _boolean,
    'init_inflate': _boolean,
    'num_epochs': _real_at_least(0, low_open=True),
    'num_train_steps': _count_or_unset,
    'seed': _int_at_least(0),
    'log_every_steps': _int_at_least(1),
    'eval_every_steps': _count_or_unset,
    'checkpoint_every_steps': _int_at_least(1),
    # 0 would delete every checkpoint as soon as it is written.
    'keep_checkpoints': _int_at_least(1),
    'shard_params': _boolean,
}

# The `video` section, which only video configs have (configs/video/kinetics.py).
_VIDEO_RULES = {
    'video': _config_dict,
    'video.video_key': _name,
    'video.label_key': _name,
    'video.sampling': _one_of(('stride', 'segments')),
    'video.sampling_rate': _int_at_least(1),
    'video.num_sample': _int_at_least(1),
    'video.eval_clips': _int_at_least(1),
    'video.eval_crops': _one_of((1, 3)),
}


def _rules(config: ml_collections.ConfigDict) -> dict[str, Callable[[Any], str | None]]:
  return {**_RULES, **_VIDEO_RULES} if 'video' in config else _RULES


def field_names(config: ml_collections.ConfigDict | None = None) -> list[str]:
  """The fields `validate` expects of `config` (any config if None), dotted (`optim.base_lr`)."""
  return sorted(_rules(config) if config is not None else {**_RULES, **_VIDEO_RULES})


def _flatten(config: ml_collections.ConfigDict, prefix: str = '') -> dict[str, Any]:
  """`{dotted name: value}`, ConfigDicts included, model_overrides not descended."""
  flat = {}
  for key, value in config.items():
    name = prefix + key
    flat[name] = value
    if isinstance(value, ml_collections.ConfigDict) and name != 'model_overrides':
      flat.update(_flatten(value, name + '.'))
  return flat


def unknown_field_message(name: str) -> str:
  """'config.x is not a config field' with the closest known names."""
  close = difflib.get_close_matches(name, field_names(), n=3)
  hint = f' (did you mean {" or ".join(close)}?)' if close else ''
  return f'config.{name} is not a config field{hint}; see configs/default.py'


def _stride_message(config: ml_collections.ConfigDict, cfg: mvit.MViTv2Config) -> str | None:
  """Why `image_size` does not fit the model's strides, or None."""
  stride = convert.image_size_multiple(cfg)
  if config.image_size % stride == 0:
    return None
  patch, stages = cfg.per_axis(cfg.patch_stride)[-1], len(cfg.depths)
  why = (f'patch stride {patch}' if stride == patch else
         f'patch stride {patch} x {cfg.per_axis(cfg.q_stride)[-1]}^{stages - 1} for its '
         f'{stages} stages')
  lower = max(config.image_size // stride * stride, stride)
  return (f'config.image_size = {config.image_size}: {config.model} needs a multiple of '
          f'{stride} ({why}), e.g. {lower} or {lower + stride}')


def validate(config: ml_collections.ConfigDict):
  """Raises `ConfigError` for the first unusable field of `config`.

  Args:
    config: a run config (configs/default.py and the files that import it).

  Raises:
    ConfigError: one line: the field, its value and what is allowed.
  """
  flat, rules = _flatten(config), _rules(config)
  for name in sorted(set(flat) - set(rules)):
    raise ConfigError(unknown_field_message(name))
  for name in sorted(set(rules) - set(flat)):
    raise ConfigError(f'config.{name} is missing; configs/default.py sets every field')
  for name, rule in rules.items():
    problem = rule(flat[name])
    if problem:
      raise ConfigError(f'config.{name} = {flat[name]!r}: {problem}')
  for flag in ('init_drop_head', 'init_inflate'):
    if config[flag] and not config.init_from:
      raise ConfigError(f'config.{flag} = True needs config.init_from')
  if (config.init_from and '://' not in config.init_from
      and not os.path.exists(config.init_from)):
    raise ConfigError(f'config.init_from = {config.init_from!r}: no such file or directory')
  try:
    cfg = mvit.variant_config(config.model, num_classes=config.num_classes,
                              image_size=config.image_size, dtype=config.dtype,
                              **config.model_overrides.to_dict())
  except (TypeError, ValueError) as e:
    raise ConfigError(f'config.model_overrides: {e}') from None
  problem = _stride_message(config, cfg)
  if problem:
    raise ConfigError(problem)


def check_batch_sizes(config: ml_collections.ConfigDict, device_count: int):
  """Raises `ConfigError` unless both batches split evenly over the devices.

  Every host has as many devices, so a batch that splits over the devices also
  splits over the hosts.

  Args:
    config: a validated run config.
    device_count: devices of all processes.
  """
  k = config.optim.grad_accum_steps
  if config.batch_size % (device_count * k):
    raise ConfigError(
        f'config.batch_size = {config.batch_size}: must be a multiple of the {device_count} '
        f'devices x optim.grad_accum_steps {k} = {device_count * k}')
  if config.eval_batch_size % device_count:
    raise ConfigError(
        f'config.eval_batch_size = {config.eval_batch_size}: must be a multiple of the '
        f'{device_count} devices')
