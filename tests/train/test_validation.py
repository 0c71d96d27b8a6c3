"""Config validation: every field checked up front, one line per problem."""

import glob
import importlib
import os
import types

import pytest

from configs import default
from configs.video import kinetics
from mvitv2_jax.train import evaluation
from mvitv2_jax.train import validation
from mvitv2_jax.train.errors import ConfigError
from tests.helpers import training


def _flat_names(config, prefix=''):
  names = []
  for key, value in config.items():
    names.append(prefix + key)
    if hasattr(value, 'items') and key != 'model_overrides':
      names += _flat_names(value, prefix + key + '.')
  return names


def test_every_default_field_has_a_rule():
  config = default.get_config()
  assert sorted(_flat_names(config)) == validation.field_names(config)


def test_every_video_field_has_a_rule():
  config = kinetics.get_config()
  assert sorted(_flat_names(config)) == validation.field_names(config)


SHIPPED_CONFIGS = sorted(
    glob.glob(os.path.join(training.REPO_ROOT, 'configs', '*.py'))
    + glob.glob(os.path.join(training.REPO_ROOT, 'configs', 'video', '*.py')))


def _shipped_config(path):
  name = os.path.relpath(path, training.REPO_ROOT)[:-3].replace(os.sep, '.')
  return importlib.import_module(name).get_config()


@pytest.mark.parametrize('path', SHIPPED_CONFIGS)
def test_shipped_configs_are_valid(path):
  validation.validate(_shipped_config(path))


@pytest.mark.parametrize('path', SHIPPED_CONFIGS)
@pytest.mark.parametrize('devices', [1, 2, 4, 8, 16])
def test_shipped_configs_fit_1_to_16_devices(path, devices):
  # Train batches must split over the devices; eval batches are rounded up to them.
  config = _shipped_config(path)
  validation.validate(config)
  validation.check_batch_sizes(config, devices)
  large_split = types.SimpleNamespace(num_examples=lambda config, split: 1_000_000)
  eval_batch = evaluation.eval_config(config, large_split, devices).eval_batch_size
  assert eval_batch % devices == 0
  assert config.eval_batch_size <= eval_batch < config.eval_batch_size + devices


def test_tiny_test_config_is_valid():
  validation.validate(training.tiny_config())


@pytest.mark.parametrize('overrides, message', [
    ({'batch_size': 0}, r'config.batch_size = 0: must be an integer >= 1'),
    ({'batch_size': -16}, r'config.batch_size = -16: must be an integer >= 1'),
    ({'eval_batch_size': 0}, r'config.eval_batch_size = 0: must be an integer >= 1'),
    ({'optim.base_lr': -1.0}, r'config.optim.base_lr = -1.0: must be a number >= 0'),
    ({'optim.min_lr': -1e-6}, r'config.optim.min_lr = -1e-06: must be a number >= 0'),
    ({'keep_checkpoints': 0}, r'config.keep_checkpoints = 0: must be an integer >= 1'),
    ({'mode': 'tran'}, r"config.mode = 'tran': must be one of 'train', 'eval'"),
    ({'dtype': 'float64'}, r"config.dtype = 'float64': must be one of"),
    ({'model': 'mvitv2_x'},
     r"config.model = 'mvitv2_x': must be one of .*'mvit_b_16', .*'mvitv2_b'"),
    ({'eval_crop_pct': 0.0}, r'config.eval_crop_pct = 0.0: must be a number in \(0, 1\]'),
    ({'num_train_steps': 0}, r'must be -1 \(unset\) or an integer >= 1'),
    ({'aug.mixup_prob': 1.5}, r'config.aug.mixup_prob = 1.5: must be a number in \[0, 1\]'),
    ({'optim.grad_accum_steps': 0}, r'config.optim.grad_accum_steps = 0'),
    ({'image_size': 36}, r'config.image_size = 36: mvitv2_demo needs a multiple of 8 '
                         r'\(patch stride 4 x 2\^1 for its 2 stages\), e.g. 32 or 40'),
    ({'model': 'mvitv2_s', 'model_overrides.depths': (1, 2, 11, 2), 'image_size': 200},
     r'needs a multiple of 32 \(patch stride 4 x 2\^3 for its 4 stages\), e.g. 192 or 224'),
    ({'model_overrides.remat_polcy': 'x'}, r"config.model_overrides: Unknown model options "
                                           r"\['remat_polcy'\]"),
    ({'init_drop_head': True}, r'init_drop_head = True needs config.init_from'),
    ({'init_from': '/no/such/ckpt'}, r"config.init_from = '/no/such/ckpt': no such file"),
])
def test_bad_field_is_one_line(overrides, message):
  with pytest.raises(ConfigError, match=message) as e:
    validation.validate(training.tiny_config(**overrides))
  assert '\n' not in str(e.value)


def test_unknown_field_suggests_the_closest():
  config = training.tiny_config()
  config.batchsize = 4
  with pytest.raises(ConfigError, match=r'config.batchsize is not a config field \(did you '
                                        r'mean batch_size'):
    validation.validate(config)
  config = training.tiny_config()
  config.optim.base_lrr = 1.0
  with pytest.raises(ConfigError, match=r'config.optim.base_lrr is not a config field '
                                        r'\(did you mean optim.base_lr'):
    validation.validate(config)


def test_train_batches_must_split_over_devices():
  config = training.tiny_config(batch_size=12, eval_batch_size=6)
  validation.check_batch_sizes(config, 2)
  with pytest.raises(ConfigError, match=r'batch_size = 12: must be a multiple of the 8 '
                                        r'devices x optim.grad_accum_steps 1 = 8'):
    validation.check_batch_sizes(config, 8)
  # The eval batch is rounded up to the devices instead (train.evaluation.eval_config).
  validation.check_batch_sizes(training.tiny_config(batch_size=16, eval_batch_size=6), 4)
  with pytest.raises(ConfigError, match=r'x optim.grad_accum_steps 3 = 6'):
    validation.check_batch_sizes(training.tiny_config(**{'optim.grad_accum_steps': 3}), 2)
