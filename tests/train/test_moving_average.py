"""The variables' moving average (`optim.ema_decay`): timm's ModelEma update after every
step, BatchNorm's running statistics averaged too, evaluated beside the variables, kept
in best/ by its own metric, and resumed exactly."""

import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mvitv2_jax import train
from mvitv2_jax.train import checkpointing
from mvitv2_jax.train import programs as programs_lib
from mvitv2_jax.train import step as step_lib
from tests.helpers import in_process
from tests.helpers import multidevice
from tests.helpers import synthetic_data
from tests.helpers import training

DECAY = 0.5  # Far from 1, so that a step's weight in the average is plain to see.
RUN = {'num_train_steps': 6, 'checkpoint_every_steps': 3, 'eval_every_steps': 3,
       'log_every_steps': 3, 'aug.mixup_alpha': 0.0, 'aug.cutmix_alpha': 0.0,
       'optim.base_lr': 0.1, 'optim.ema_decay': DECAY}
CONFIGS = {
    'mvit': lambda **o: training.tiny_config(**o),
    'batch_norm': lambda **o: training.tiny_batchnorm_config('restv2_demo', **o),
}


def _batch(programs, seed):
  rng = np.random.default_rng(seed)
  spec = programs.batch(programs.config.batch_size, train=True)
  return {k: (rng.integers(0, programs.config.num_classes, v.shape).astype(v.dtype)
              if np.issubdtype(v.dtype, np.integer) else
              np.ones(v.shape, v.dtype) if v.dtype == bool else
              rng.uniform(0, 255, v.shape).astype(v.dtype))
          for k, v in spec.items()}


@pytest.mark.parametrize('family', list(CONFIGS))
def test_the_average_is_timms_update_after_each_step(family):
  config = CONFIGS[family](**{'optim.ema_decay': DECAY, 'optim.base_lr': 0.1})
  mesh = multidevice.one_device_mesh()
  with jax.set_mesh(mesh):
    programs = programs_lib.build(config, mesh, synthetic_data)
    state = programs.initial_state()
    assert isinstance(state, step_lib.StatefulTrainState)
    # It starts as the initial variables: BatchNorm's statistics included.
    assert multidevice.max_diff(jax.device_get(state.averaged_variables()),
                                jax.device_get(state.variables())) == 0
    expected = jax.device_get(state.averaged_variables())
    for seed in range(3):
      state, _ = programs.train_step(state, _batch(programs, seed))
      expected = jax.tree.map(lambda a, v: DECAY * a + (1 - DECAY) * v, expected,
                              jax.device_get(state.variables()))
      assert multidevice.max_diff(jax.device_get(state.averaged_variables()), expected) <= 1e-6
  assert set(expected) == ({'params', 'batch_stats'} if family == 'batch_norm' else {'params'})


def _run(workdir, config):
  result = train.train_and_evaluate(config, str(workdir), data=synthetic_data,
                                    writer=in_process.RecordingWriter,
                                    devices=in_process.one_device())
  return result, in_process.RecordingWriter.last.scalars_by_step


def _saved_average(path):
  """The moving average in a train state's checkpoint directory."""
  with ocp.PyTreeCheckpointer() as reader:
    tree = reader.metadata(str(path)).item_metadata.tree
    return reader.restore(str(path), restore_args=jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))['ema']


def test_a_run_evaluates_keeps_and_resumes_its_average(tmp_path, caplog):
  config = training.tiny_batchnorm_config('restv2_demo', **RUN)
  state, scalars = _run(tmp_path / 'run', config)
  assert {'eval/top1', 'eval/ema_top1', 'eval/ema_loss'} <= set(scalars[6]), scalars[6]
  # The average lags the variables: it evaluates to another loss.
  assert scalars[6]['eval/ema_loss'] != pytest.approx(scalars[6]['eval/loss'], rel=1e-4)
  # best/ holds the average of the evaluation its own top-1 chose.
  best_dir = next((tmp_path / 'run' / 'best').iterdir())
  best_step = int(best_dir.name)
  assert scalars[best_step]['eval/ema_top1'] == max(
      scalars[s]['eval/ema_top1'] for s in (3, 6))
  assert multidevice.max_diff(checkpointing.restore_params(str(best_dir)),
                              _saved_average(tmp_path / 'run' / 'checkpoints' / best_dir.name)
                              ) == 0
  # A train state's checkpoint reads back as its variables, not their average.
  assert multidevice.max_diff(
      checkpointing.restore_params(str(tmp_path / 'run' / 'checkpoints' / '6')),
      jax.device_get(state.variables())) == 0

  shutil.copytree(tmp_path / 'run', tmp_path / 'resumed')
  shutil.rmtree(tmp_path / 'resumed' / 'checkpoints' / '6')
  with caplog.at_level('INFO'):
    resumed, _ = _run(tmp_path / 'resumed', config)
  assert 'Resuming from the checkpoint of step 3.' in caplog.text
  assert multidevice.max_diff(jax.device_get(resumed.averaged_variables()),
                              jax.device_get(state.averaged_variables())) <= 1e-6
