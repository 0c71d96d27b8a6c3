"""The video path through the trainer: configs, multi-view eval, resume (CPU)."""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvitv2_jax import tasks
from mvitv2_jax import train
from mvitv2_jax.data import video
from mvitv2_jax.tasks import classification
from mvitv2_jax.train import optim
from mvitv2_jax.train import step as step_lib
from tests.helpers import in_process
from tests.helpers import multidevice
from tests.helpers import training

TINY = training.DEMO_MOTION_TINY


def _load(name):
  return importlib.import_module(f'configs.video.{name}').get_config()


@pytest.mark.parametrize('name,frames,rate,size,views,classes', [
    ('mvitv2_s_16x4_k400', 16, 4, 224, 5, 400),
    ('mvitv2_b_32x3_k400', 32, 3, 224, 5, 400),
    ('mvitv2_l_40x3_k400', 40, 3, 312, 15, 400),
    ('mvitv2_s_16x4_ssv2', 16, 4, 224, 3, 174),
    ('demo', 8, 1, 32, 2, 8),
])
def test_video_configs_build_their_models(name, frames, rate, size, views, classes):
  config = _load(name)
  task = tasks.for_config(config)
  assert task.data_source(config) is video
  assert video.clip_length(config) == frames and config.video.sampling_rate == rate
  assert video.num_views(config) == views
  model = task.create_model(config)
  assert model.cfg.input_size == (frames, size, size)
  assert model.cfg.drop_path_rate == config.drop_path_rate
  tx = optim.create_optimizer(config, lambda _: 1e-3)
  shapes, _ = step_lib.abstract_train_state(config, task, model, tx,
                                            multidevice.one_device_mesh())
  assert shapes.params['head']['kernel'].shape[-1] == classes
  logits = jax.eval_shape(lambda p, x: model.apply({'params': p}, x), shapes.params,
                          jax.ShapeDtypeStruct((2, frames, size, size, 3), jnp.float32))
  assert logits.shape == (2, classes)


def test_kinetics_and_ssv2_recipes():
  s = _load('mvitv2_s_16x4_k400')
  assert (s.batch_size, s.video.num_sample, s.num_epochs) == (256, 2, 200)
  assert s.optim.name == 'adamw' and s.optim.warmup_epochs == 30
  # BASE_LR 1e-4 per 32 clips (one shard: 16 videos x NUM_SAMPLE 2).
  assert optim.scaled_lr(s.optim.base_lr, 32) == pytest.approx(1e-4)
  assert optim.scaled_lr(s.optim.min_lr, 32) == pytest.approx(1e-6)
  assert (s.aug.randaugment_num_ops, s.aug.randaugment_magnitude) == (4, 7.0)
  assert tasks.for_config(s).create_model(s).cfg.head_dropout_rate == 0.5
  ssv2 = _load('mvitv2_s_16x4_ssv2')
  assert ssv2.optim.name == 'sgd' and not ssv2.aug.flip and ssv2.video.sampling == 'segments'
  assert optim.scaled_lr(ssv2.optim.base_lr, 16) == pytest.approx(0.0025)


def test_image_configs_keep_the_image_source():
  from mvitv2_jax.data import images  # pylint: disable=g-import-not-at-top
  config = training.tiny_config()
  assert tasks.for_config(config).data_source(config) is images


def test_multi_view_eval_averages_softmax_over_views():
  config = training.tiny_video_config()
  task = tasks.for_config(config)
  model = task.create_model(config)
  clips = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 4, 16, 16, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), clips[:, 0])['params']
  labels = jnp.array([1, 2, 3])
  mask = jnp.array([True, True, False])
  sums = jax.jit(functools.partial(step_lib.eval_step, task=task, model=model, config=config))(
      {'params': params}, {'image': clips, 'label': labels, 'mask': mask})
  logits = jax.jit(lambda x: model.apply({'params': params}, x))(clips.reshape(6, 4, 16, 16, 3))
  probs = jnp.mean(jax.nn.softmax(logits.reshape(3, 2, -1)), axis=1)
  expected = classification.eval_sums(jnp.log(probs), labels, mask)
  for key in ('loss', 'top1', 'top5', 'count'):
    np.testing.assert_allclose(sums[key], expected[key], rtol=1e-5)
  assert float(sums['count']) == 2


class _Interrupted(Exception):
  pass


class _StopsAfter3:
  """The video source whose train stream ends with an error after 3 batches."""
  num_examples = staticmethod(video.num_examples)
  create_eval_iterator = staticmethod(video.create_eval_iterator)

  @staticmethod
  def create_train_iterator(config, *, start_step=0):
    for i, batch in enumerate(video.create_train_iterator(config, start_step=start_step)):
      if i == 3:
        raise _Interrupted()
      yield batch


@pytest.mark.slow
def test_video_run_resumes_exactly_mid_epoch(tmp_path, demo_motion_tiny_dir):
  data_dir = demo_motion_tiny_dir
  # 40 videos x 2 clips / 8: 10 steps per epoch; interrupted at step 3.
  run = dict(dataset=TINY, data_dir=data_dir, batch_size=8, eval_batch_size=6,
             num_train_steps=6, num_classes=8, num_train_examples=-1, num_eval_examples=-1,
             checkpoint_every_steps=3, log_every_steps=3, eval_every_steps=100,
             shuffle_buffer=64, **{'optim.base_lr': 0.1, 'aug.mixup_alpha': 0.0})
  config = lambda: training.tiny_video_config(**run)
  writer = in_process.RecordingWriter
  one = in_process.one_device()
  reference = train.train_and_evaluate(config(), str(tmp_path / 'ref'), writer=writer,
                                       devices=one)
  # Every video once, 21 % 6 != 0.
  assert writer.last.scalars_by_step[6]['eval/count'] == 21
  with pytest.raises(_Interrupted):
    train.train_and_evaluate(config(), str(tmp_path / 'run'), data=_StopsAfter3,
                             writer=writer, devices=one)
  resumed = train.train_and_evaluate(config(), str(tmp_path / 'run'), writer=writer,
                                     devices=one)
  assert int(resumed.step) == 6
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed.params)),
                  jax.tree.leaves(jax.device_get(reference.params))):
    np.testing.assert_allclose(a, b, atol=1e-6)

