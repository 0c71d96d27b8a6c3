"""End-to-end trainer tests on a tiny MViTv2 and synthetic data (CPU)."""

import glob
import json
import os
import signal

import chex
import jax
import numpy as np
import pytest

from mvitv2_jax import tasks
from mvitv2_jax.data import images
from mvitv2_jax.train import checkpointing
from mvitv2_jax.train import integrity
from mvitv2_jax.train import optim
from mvitv2_jax.train import sharding
from mvitv2_jax.train import step as step_lib
from tests.helpers import fake_imagenet
from tests.helpers import in_process
from tests.helpers import synthetic_data
from tests.helpers import training

# The reference run: 20 steps, checkpoints every 5, evals at 10 and 20. No
# mixup, so that it learns visibly in 20 steps (the multi-device check mixes).
RUN = {'num_train_steps': 20, 'aug.mixup_alpha': 0.0, 'aug.cutmix_alpha': 0.0,
       'optim.base_lr': 0.1}


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """The uninterrupted run; its steps must each trace exactly once."""
  workdir = tmp_path_factory.mktemp('reference')
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(step_lib, 'train_step', chex.assert_max_traces(step_lib.train_step, 1))
    mp.setattr(step_lib, 'eval_step', chex.assert_max_traces(step_lib.eval_step, 1))
    state, scalars = in_process.train_tiny(workdir, **RUN)
  return workdir, jax.device_get(state.params), scalars


def _max_diff(a, b):
  return max(float(np.max(np.abs(x - y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_loss_goes_down_and_outputs_written(reference):
  workdir, _, scalars = reference
  assert scalars[20]['train/loss'] < 0.8 * scalars[5]['train/loss'], scalars
  assert scalars[20]['eval/top1'] > 0.5, scalars[20]
  for key in ('train/accuracy', 'train/lr', 'train/grad_norm',
              'train/images_per_s', 'eval/top5', 'eval/loss'):
    assert np.isfinite(scalars[20][key]), key
  assert json.load(open(workdir / 'config.json'))['model'] == 'mvitv2_demo'
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['10', '15', '20']
  assert len(os.listdir(workdir / 'best')) == 1


def test_eval_counts_every_example_once(reference):
  _, _, scalars = reference
  # 37 examples in batches of 8: the padded 3 of the last batch count zero.
  assert scalars[10]['eval/count'] == 37
  assert scalars[20]['eval/count'] == 37


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(reference, tmp_path):
  _, ref_params, _ = reference
  # The run holds once step 10's checkpoint is on disk; SIGKILL there.
  proc = training.run_train_subprocess(str(tmp_path), RUN, like_pytest=True, wait=False,
                                      hold_after=10)
  lines = []
  try:
    for line in proc.stdout:
      lines.append(line)
      if line.startswith('HOLDING 10'):
        break
  finally:
    proc.kill()
  out = ''.join(lines) + proc.communicate()[0]
  assert 'HOLDING 10' in out, out
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10', '5'], out
  state, _ = in_process.train_tiny(tmp_path, **RUN)
  assert int(state.step) == 20
  assert _max_diff(jax.device_get(state.params), ref_params) <= 1e-6


def _truncate(step_dir):
  path = in_process.largest_file(step_dir)
  os.truncate(path, os.path.getsize(path) - 1)


def _flip_byte(step_dir):
  path = in_process.largest_file(step_dir)
  with open(path, 'r+b') as f:
    data = bytearray(f.read())
    data[len(data) // 2] ^= 0x80
    f.seek(0)
    f.write(data)


def _delete_metadata(step_dir):
  os.remove(os.path.join(step_dir, '_METADATA'))


@pytest.mark.slow
def test_kill_loop_with_corrupt_latest_step_resumes_exactly(reference, tmp_path):
  _, ref_params, _ = reference
  # (hold after, corrupt the step held at, the step the next start resumes from)
  rounds = [(10, _truncate, None), (10, _delete_metadata, 5), (15, _flip_byte, 5)]
  for hold_after, corrupt, resumes_from in rounds:
    proc = training.run_train_subprocess(str(tmp_path), RUN, like_pytest=True, wait=False,
                                        hold_after=hold_after)
    out = training.Output(proc)
    try:
      out.wait_for(f'HOLDING {hold_after}')
    finally:
      proc.kill()
    text = out.finish()[1]
    if resumes_from is not None:
      assert 'Skipping the corrupt checkpoint checkpoints/' in text, text
      assert f'Resuming from the checkpoint of step {resumes_from}.' in text, text
    corrupt(str(tmp_path / 'checkpoints' / str(hold_after)))
  state, _ = in_process.train_tiny(tmp_path, **RUN)  # Step 15 is corrupt: it resumes from 10.
  assert int(state.step) == 20
  assert _max_diff(jax.device_get(state.params), ref_params) <= 1e-6
  assert sorted(os.listdir(tmp_path / 'corrupt')) == [
      'checkpoints-10', 'checkpoints-10.2', 'checkpoints-15']


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_exits_with_its_status(tmp_path, signum):
  proc = training.run_train_subprocess(
      str(tmp_path), {'num_train_steps': 100_000, 'log_every_steps': 1}, wait=False)
  out = training.Output(proc)
  try:
    out.wait_for('step 3/')
    proc.send_signal(signum)
    proc.send_signal(signum)  # A second one, as an impatient Ctrl-C, changes nothing.
    returncode, text = out.finish(timeout=300)
  finally:
    proc.kill()  # A run that ignored the signal must not outlive the test.
  assert returncode == 128 + signum, text
  assert f'Stopped on {signal.Signals(signum).name} at step' in text
  last = max(int(s) for s in os.listdir(tmp_path / 'checkpoints'))
  assert 3 <= last < 100_000, last
  assert f'INTERRUPTED {last}:' in text
  assert integrity.verify(str(tmp_path / 'checkpoints' / str(last)))['step'] == last
  assert glob.glob(str(tmp_path / 'events.out.tfevents.*')), os.listdir(tmp_path)
  state, _ = in_process.train_tiny(tmp_path, num_train_steps=last + 1, log_every_steps=1)
  assert int(state.step) == last + 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  with pytest.raises(FloatingPointError, match='step 8;.*checkpoint is step 5'):
    in_process.train_tiny(tmp_path, data=synthetic_data.nan_images_from(7), **RUN)
  assert os.listdir(tmp_path / 'checkpoints') == ['5']

  config = training.tiny_config(**RUN)
  mesh = sharding.create_mesh(in_process.one_device())
  tx = optim.create_optimizer(config, lambda _: 0.0)
  task = tasks.for_config(config)
  abstract, _ = step_lib.abstract_train_state(config, task, task.create_model(config), tx, mesh)
  ckpt = checkpointing.Checkpointer(str(tmp_path), 1)
  state = ckpt.restore(5, abstract)
  ckpt.close()
  assert int(state.step) == 5
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_eval_only_from_init_from(reference, tmp_path):
  _, ref_params, scalars = reference
  weights = str(tmp_path / 'weights')
  checkpointing.save_params(weights, ref_params)
  results, _ = in_process.train_tiny(tmp_path / 'run', mode='eval', init_from=weights)
  assert results['count'] == 37
  assert results['top1'] == pytest.approx(scalars[20]['eval/top1'])
  assert results['loss'] == pytest.approx(scalars[20]['eval/loss'], rel=1e-5)


def test_finetune_from_init_from_with_new_head(reference, tmp_path):
  workdir, _, scalars = reference
  best_step = max((10, 20), key=lambda s: scalars[s]['eval/top1'])
  assert os.listdir(workdir / 'best') == [str(best_step)]
  state, _ = in_process.train_tiny(tmp_path, num_train_steps=2, num_classes=5,
                                   init_from=str(workdir / 'best' / str(best_step)),
                                   init_drop_head=True)
  best = checkpointing.restore_params(str(workdir / 'best' / str(best_step)))
  assert state.params['head']['kernel'].shape[-1] == 5
  assert np.abs(state.params['patch_embed']['kernel']
                - best['patch_embed']['kernel']).max() < 0.05


def test_two_steps_on_fake_imagenet(tmp_path):
  data_dir = str(tmp_path / 'data')
  fake_imagenet.make_fake_imagenet(data_dir, num_train_per_class=4,
                                   num_validation=5)
  state, scalars = in_process.train_tiny(
      tmp_path / 'run', data=images, dataset='imagenet2012', data_dir=data_dir,
      num_classes=1000, batch_size=4, eval_batch_size=4, num_train_steps=2,
      shuffle_buffer=16, checkpoint_every_steps=2)
  assert int(state.step) == 2
  assert scalars[2]['eval/count'] == 5
  assert np.isfinite(scalars[2]['train/loss'])

