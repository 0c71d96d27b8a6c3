"""Faults a trainer meets: bad configs, a second trainer, a changed config on resume,
restarts around best/, divergence, batches that do not fit."""

import logging
import os
import signal

import pytest

from mvitv2_jax.data import images
from mvitv2_jax.train import errors
from mvitv2_jax.train import integrity
from mvitv2_jax.train import memory
from tests.helpers import fake_imagenet
from tests.helpers import in_process
from tests.helpers import synthetic_data
from tests.helpers import training


def test_keep_checkpoints_zero_is_refused_before_anything_is_written(tmp_path):
  with pytest.raises(errors.ConfigError, match='keep_checkpoints = 0: must be an integer >= 1'):
    in_process.train_tiny(tmp_path / 'run', keep_checkpoints=0)
  assert not os.path.exists(tmp_path / 'run')


def test_batch_not_splitting_over_devices_is_refused_before_anything_is_written(tmp_path):
  with pytest.raises(errors.ConfigError, match='grad_accum_steps 3 = 3'):
    in_process.train_tiny(tmp_path / 'run', **{'optim.grad_accum_steps': 3})
  assert not os.path.exists(tmp_path / 'run')


def test_resume_with_another_config_is_refused_and_changes_nothing(tmp_path):
  in_process.train_tiny(tmp_path, num_train_steps=5)
  config_json = (tmp_path / 'config.json').read_bytes()
  record = (tmp_path / 'checkpoints' / '5' / integrity.RECORD_FILE).read_bytes()
  with pytest.raises(errors.ConfigMismatchError, match=r'batch_size 16 -> 8\. Resume'):
    in_process.train_tiny(tmp_path, num_train_steps=5, batch_size=8)
  assert (tmp_path / 'config.json').read_bytes() == config_json
  assert (tmp_path / 'checkpoints' / '5' / integrity.RECORD_FILE).read_bytes() == record
  # A longer run of the same config resumes.
  state, _ = in_process.train_tiny(tmp_path, num_train_steps=7)
  assert int(state.step) == 7


@pytest.mark.slow
def test_second_trainer_is_refused_and_a_killed_ones_lock_is_not(tmp_path):
  first = training.run_train_subprocess(tmp_path, {}, wait=False, hold_after=5)
  out = training.Output(first)
  try:
    out.wait_for('HOLDING 5')
    with pytest.raises(errors.WorkdirBusyError, match=rf'in use by another trainer \(pid '
                                                      rf'{first.pid} on '):
      in_process.train_tiny(tmp_path)
  finally:
    first.send_signal(signal.SIGKILL)
    out.finish()
  state, _ = in_process.train_tiny(tmp_path)  # The kernel dropped the dead trainer's lock.
  assert int(state.step) == 10


def test_best_keeps_its_top1_across_restarts(tmp_path):
  _, scalars = in_process.train_tiny(tmp_path, eval_every_steps=5, **{'optim.base_lr': 0.3})
  best_step = max((5, 10), key=lambda s: scalars[s]['eval/top1'])
  best_top1 = scalars[best_step]['eval/top1']

  class WrongLabels:
    """The same data with eval labels shifted: every later eval is worse."""
    num_examples = staticmethod(synthetic_data.num_examples)
    create_train_iterator = staticmethod(synthetic_data.create_train_iterator)

    @staticmethod
    def create_eval_iterator(config):
      for batch in synthetic_data.create_eval_iterator(config):
        batch['label'] = (batch['label'] + 1) % config.num_classes
        yield batch

  _, scalars = in_process.train_tiny(tmp_path, data=WrongLabels, eval_every_steps=5,
                                     num_train_steps=15, **{'optim.base_lr': 0.3})
  assert scalars[15]['eval/top1'] < best_top1
  assert os.listdir(tmp_path / 'best') == [str(best_step)]
  assert integrity.verify(str(tmp_path / 'best' / str(best_step)))['top1'] == best_top1




def test_divergence_never_names_a_checkpoint_of_huge_params(tmp_path):
  # At this lr the loss is finite but in the thousands by step 5: its params are no good.
  with pytest.raises(errors.Diverged, match=r'Loss is nan at step 8; stopping\. No checkpoint '
                                            r'since step 0 is good \(finite params that gave a '
                                            r'finite loss below 23 at the next step\)\. Lower'):
    in_process.train_tiny(tmp_path, data=synthetic_data.nan_images_from(7),
                          **{'optim.base_lr': 1e3, 'optim.grad_clip_norm': 0.0})
  assert os.listdir(tmp_path / 'checkpoints') == []
  assert os.listdir(tmp_path / 'corrupt') == ['checkpoints-5']


def test_eval_batch_is_capped_to_what_the_split_needs(tmp_path, caplog):
  data_dir = str(tmp_path / 'data')
  fake_imagenet.make_fake_imagenet(data_dir, num_train_per_class=4, num_validation=8)
  with caplog.at_level(logging.INFO):
    _, scalars = in_process.train_tiny(tmp_path / 'run', data=images, dataset='imagenet2012',
                                       data_dir=data_dir, num_classes=1000, batch_size=4,
                                       eval_batch_size=1024, num_train_steps=2, shuffle_buffer=16)
  assert scalars[2]['eval/count'] == 8
  assert ("Eval batch 8 instead of 1024: the 8 examples of 'validation', rounded up to a "
          'multiple of the 1 devices.') in caplog.text


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_batch_that_does_not_fit_fails_before_training(tmp_path, monkeypatch, mode):
  overrides = {}
  if mode == 'eval':
    in_process.train_tiny(tmp_path / 'weights', num_train_steps=1)
    overrides = {'mode': 'eval', 'init_from': str(tmp_path / 'weights' / 'checkpoints' / '1')}
  monkeypatch.setattr(memory, 'device_memory_bytes', lambda: 4096)
  step = 'train step at batch_size 16' if mode == 'train' else 'eval step at eval_batch_size 8'
  with pytest.raises(errors.DoesNotFitError, match=rf'The {step} needs [\d.]+ [KMG]iB per '
                                                   rf'device, more than the 4\.0 KiB a cpu '
                                                   rf'device has; lower config\.'):
    in_process.train_tiny(tmp_path / 'run', **overrides)
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
