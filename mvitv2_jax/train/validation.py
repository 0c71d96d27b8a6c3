"""Checks every config field before a run touches anything.

The trainer's own fields are checked here; the task of the model's family adds its
fields and cross-field rules (`mvitv2_jax.tasks`), and the family builds the model's
config (`model_overrides`). `validate(config)` needs no devices and no data;
`check_batch_sizes` runs once the device count is known. Both raise
`errors.ConfigError` with one line naming the field, its value and what is allowed.
"""

import difflib
import os

import ml_collections

from mvitv2_jax import config_fields as fields
from mvitv2_jax import models
from mvitv2_jax import pretrained
from mvitv2_jax import tasks
from mvitv2_jax.train.errors import ConfigError

_DTYPES = ('float32', 'bfloat16', 'float16')
_MODES = ('train', 'eval')


def _model_overrides(value) -> str | None:
  if isinstance(value, ml_collections.ConfigDict):
    return None
  return "must be a ConfigDict of the model config's fields"


# One check per field of configs/default.py the trainer reads; the task adds its own.
_CHECKS = {
    'model': fields.one_of(models.model_names()),
    'dtype': fields.one_of(_DTYPES),
    'model_overrides': _model_overrides,
    'dataset': fields.name,
    'data_dir': fields.string,
    'train_split': fields.name,
    'eval_split': fields.name,
    'batch_size': fields.int_at_least(1),
    'eval_batch_size': fields.int_at_least(1),
    'shuffle_buffer': fields.int_at_least(1),
    'num_train_examples': fields.count_or_unset,
    'num_eval_examples': fields.count_or_unset,
    'optim': fields.section,
    'optim.name': fields.one_of(('adamw', 'sgd')),
    'optim.momentum': fields.real_in(0, 1, high_open=True),
    'optim.base_lr': fields.real_at_least(0),
    'optim.warmup_start_lr': fields.real_at_least(0),
    'optim.min_lr': fields.real_at_least(0),
    'optim.warmup_epochs': fields.real_at_least(0),
    'optim.weight_decay': fields.real_at_least(0),
    'optim.b1': fields.real_in(0, 1, high_open=True),
    'optim.b2': fields.real_in(0, 1, high_open=True),
    'optim.eps': fields.real_at_least(0, low_open=True),
    'optim.grad_clip_norm': fields.real_at_least(0),
    'optim.no_decay_rel_pos_cls': fields.boolean,
    'optim.grad_accum_steps': fields.int_at_least(1),
    'optim.ema_decay': fields.real_in(0, 1, high_open=True),
    'mode': fields.one_of(_MODES),
    'init_from': fields.string,
    'init_drop_head': fields.boolean,
    'init_inflate': fields.boolean,
    'num_epochs': fields.real_at_least(0, low_open=True),
    'num_train_steps': fields.count_or_unset,
    'seed': fields.int_at_least(0),
    'log_every_steps': fields.int_at_least(1),
    'eval_every_steps': fields.count_or_unset,
    'checkpoint_every_steps': fields.int_at_least(1),
    # 0 would delete every checkpoint as soon as it is written.
    'keep_checkpoints': fields.int_at_least(1),
    'shard_params': fields.boolean,
}


def _checks(config: ml_collections.ConfigDict) -> dict[str, fields.Check]:
  """The trainer's checks and those of the config's task (the model must be known first)."""
  if config.get('model') not in models.model_names():
    return _CHECKS
  return {**_CHECKS, **tasks.for_config(config).config_checks(config)}


def field_names(config: ml_collections.ConfigDict | None = None) -> list[str]:
  """The fields `validate` expects of `config` (any known field if None), dotted."""
  if config is not None:
    return sorted(_checks(config))
  names = set(_CHECKS)
  for task in {tasks.get(f.task) for f in models.families()}:
    names |= set(task.config_checks(ml_collections.ConfigDict({'video': {}})))
  return sorted(names)


def unknown_field_message(name: str) -> str:
  """'config.x is not a config field' with the closest known names."""
  close = difflib.get_close_matches(name, field_names(), n=3)
  hint = f' (did you mean {" or ".join(close)}?)' if close else ''
  return f'config.{name} is not a config field{hint}; see configs/default.py'


def validate(config: ml_collections.ConfigDict):
  """Raises `ConfigError` for the first unusable field of `config`.

  Args:
    config: a run config (configs/default.py and the files that import it).

  Raises:
    ConfigError: one line: the field, its value and what is allowed.
  """
  problem = fields.one_of(models.model_names())(config.get('model'))
  if problem:
    raise ConfigError(f'config.model = {config.get("model")!r}: {problem}')
  flat, checks = fields.flatten(config, with_sections=True), _checks(config)
  for name in sorted(set(flat) - set(checks)):
    raise ConfigError(unknown_field_message(name))
  for name in sorted(set(checks) - set(flat)):
    raise ConfigError(f'config.{name} is missing; configs/default.py sets every field')
  for name, check in checks.items():
    problem = check(flat[name])
    if problem:
      raise ConfigError(f'config.{name} = {flat[name]!r}: {problem}')
  for flag in ('init_drop_head', 'init_inflate'):
    if config[flag] and not config.init_from:
      raise ConfigError(f'config.{flag} = True needs config.init_from')
  if config.init_from.startswith(pretrained.PREFIX):
    try:
      pretrained.get(config.init_from)
    except ValueError as e:
      raise ConfigError(f'config.init_from = {config.init_from!r}: {e}') from None
  elif (config.init_from and '://' not in config.init_from
        and not os.path.exists(config.init_from)):
    raise ConfigError(f'config.init_from = {config.init_from!r}: no such file or directory '
                      f'(or {pretrained.PREFIX}NAME, a released checkpoint)')
  try:
    problem = tasks.for_config(config).check_config(config)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'config.model_overrides: {e}') from None
  if problem:
    raise ConfigError(problem)


def check_batch_sizes(config: ml_collections.ConfigDict, device_count: int):
  """Raises `ConfigError` unless the train batch splits evenly over the devices.

  Every host has as many devices, so a batch that splits over the devices also splits
  over the hosts. The eval batch is rounded up to the device count instead
  (`train.evaluation.eval_config`): its padding is masked.

  Args:
    config: a validated run config.
    device_count: devices of all processes.
  """
  k = config.optim.grad_accum_steps
  if config.batch_size % (device_count * k):
    raise ConfigError(
        f'config.batch_size = {config.batch_size}: must be a multiple of the {device_count} '
        f'devices x optim.grad_accum_steps {k} = {device_count * k}')
