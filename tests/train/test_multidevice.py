"""8 simulated CPU devices against one: the sharded steps, and the demo config's run."""

import jax
import pytest

from configs import demo
from mvitv2_jax import train
from mvitv2_jax.train import sharding
from tests.helpers import in_process
from tests.helpers import multidevice
from tests.helpers import training


@pytest.mark.slow
def test_sharded_step_matches_single_device(monkeypatch):
  one, eight = multidevice.one_device_mesh(), multidevice.eight_device_mesh()
  # The tiny model's params are all below the FSDP size threshold.
  monkeypatch.setattr(sharding, '_MIN_SHARDED_SIZE', 0)
  results = {}
  # No drop path in the accumulation check: micro-batches draw their own masks.
  for drop_path in (0.1, 0.0):
    base = dict(drop_path_rate=drop_path)
    (ref_params, ref_loss), _ = multidevice.one_step(training.tiny_config(**base), one)
    variants = {'replicated': {}, 'shard_params': {'shard_params': True}}
    if drop_path == 0.0:
      variants = {'grad_accum': {'optim.grad_accum_steps': 2}}
    for name, extra in variants.items():
      (params, loss), sharded = multidevice.one_step(
          training.tiny_config(**base, **extra), eight)
      results[name] = {'loss': abs(float(loss - ref_loss)),
                       'params': multidevice.max_diff(params, ref_params),
                       'sharded_leaves': sharded}
  assert set(results) == {'replicated', 'shard_params', 'grad_accum'}
  for name, diff in results.items():
    assert diff['loss'] < 1e-5, (name, diff)
    assert diff['params'] < 1e-6, (name, diff)
  assert results['shard_params']['sharded_leaves'] > 0
  assert results['replicated']['sharded_leaves'] == 0


@pytest.mark.slow
def test_video_step_on_8_devices_matches_one_device():
  one, eight = multidevice.one_device_mesh(), multidevice.eight_device_mesh()
  config = training.tiny_video_config(eval_batch_size=16)
  (ref_params, ref_loss), _ = multidevice.one_step(config, one)
  (params, loss), _ = multidevice.one_step(config, eight)
  ref_sums = multidevice.eval_sums(config, one, ref_params)
  sums = multidevice.eval_sums(config, eight, ref_params)
  results = {
      'train': {'loss': abs(float(loss - ref_loss)),
                'params': multidevice.max_diff(params, ref_params)},
      'eval': {k: abs(float(sums[k] - ref_sums[k])) for k in ref_sums},
      'eval_count': float(ref_sums['count'])}
  assert results['train']['loss'] < 1e-5 and results['train']['params'] < 1e-6, results
  assert results['eval_count'] == 16
  assert results['eval']['loss'] < 1e-3 and results['eval']['top1'] == 0, results


@pytest.mark.slow
def test_demo_config_trains_and_evaluates_on_8_devices(tmp_path, demo_shapes_dir, caplog):
  # The README's first command, on 8 devices and a few steps of the real demo data.
  config = demo.get_config()
  config.data_dir = demo_shapes_dir
  config.num_train_steps = 2
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.log_every_steps = 1
  config.eval_split = 'validation[:300]'
  writer = in_process.RecordingWriter
  with caplog.at_level('INFO'):
    state = train.train_and_evaluate(config, str(tmp_path), writer=writer,
                                     devices=jax.devices())
  assert int(state.step) == 2
  # 250 does not split over 8 devices: the trainer evaluates in batches of 256.
  assert 'Eval batch 256 instead of 250: a multiple of the 8 devices.' in caplog.text
  scalars = writer.last.scalars_by_step
  assert scalars[2]['eval/count'] == 300
  assert scalars[2]['train/loss'] > 0 and scalars[2]['eval/loss'] > 0
