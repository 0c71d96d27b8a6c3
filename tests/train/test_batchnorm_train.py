"""The BatchNorm families (ResTv2, LITv2) through the trainer: running statistics in the
state and its checkpoints, exact resume, eval on the running statistics, best/ and
init_from, and 8 devices against one (statistics of the global batch)."""

import shutil

from flax import serialization
import jax
import numpy as np
import pytest

from mvitv2_jax import convert
from mvitv2_jax import tasks
from mvitv2_jax import train
from mvitv2_jax.train import checkpointing
from mvitv2_jax.train import evaluation
from mvitv2_jax.train import optim
from mvitv2_jax.train import programs as programs_lib
from mvitv2_jax.train import step as step_lib
from tests.helpers import family_golden
from tests.helpers import in_process
from tests.helpers import multidevice
from tests.helpers import synthetic_data
from tests.helpers import training

MODELS = list(training.TINY_BATCHNORM)
# 6 steps, checkpoints and evals at 3 and 6; no mixup, so that it learns in 6 steps.
RUN = {'num_train_steps': 6, 'checkpoint_every_steps': 3, 'eval_every_steps': 3,
       'log_every_steps': 3, 'aug.mixup_alpha': 0.0, 'aug.cutmix_alpha': 0.0,
       'optim.base_lr': 0.1}


def _run(workdir, config):
  """`train_and_evaluate` on one device; (result, scalars by step)."""
  result = train.train_and_evaluate(config, str(workdir), data=synthetic_data,
                                    writer=in_process.RecordingWriter,
                                    devices=in_process.one_device())
  return result, in_process.RecordingWriter.last.scalars_by_step


@pytest.fixture(scope='module', params=MODELS)
def reference(request, tmp_path_factory):
  """The uninterrupted run of one family's tiny model."""
  workdir = tmp_path_factory.mktemp(request.param)
  state, scalars = _run(workdir, training.tiny_batchnorm_config(request.param, **RUN))
  return request.param, workdir, jax.device_get(state.variables()), scalars


def test_trains_and_keeps_running_statistics(reference):
  model, workdir, variables, scalars = reference
  assert set(variables) == {'params', 'batch_stats'}
  assert scalars[6]['train/loss'] < scalars[3]['train/loss'], scalars
  assert np.isfinite(scalars[6]['eval/loss']), scalars[6]
  stats = jax.tree.leaves(variables['batch_stats'])
  assert all(np.isfinite(s).all() for s in stats)
  # Every running statistic moved from its initial value (means 0, variances 1).
  assert all(not np.allclose(s, 0.0) and not np.allclose(s, 1.0) for s in stats), model
  # best/ and a train state both read back as the variables dict (what init_from takes).
  for path in (next((workdir / 'best').iterdir()), workdir / 'checkpoints' / '6'):
    assert set(checkpointing.restore_params(str(path))) == {'params', 'batch_stats'}, path


def test_models_without_collections_keep_the_four_field_state():
  # What orbax saves for MViT is unchanged, so its older checkpoints restore.
  config = training.tiny_config()
  task = tasks.for_config(config)
  state, _ = step_lib.abstract_train_state(
      config, task, task.create_model(config), optim.create_optimizer(config, lambda _: 0.0),
      multidevice.one_device_mesh())
  assert set(serialization.to_state_dict(state)) == {'step', 'params', 'opt_state', 'rng'}


def test_resume_matches_uninterrupted_run(reference, tmp_path, caplog):
  model, workdir, variables, _ = reference
  shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
  shutil.rmtree(tmp_path / 'checkpoints' / '6')
  with caplog.at_level('INFO'):
    state, _ = _run(tmp_path, training.tiny_batchnorm_config(model, **RUN))
  assert 'Resuming from the checkpoint of step 3.' in caplog.text
  assert isinstance(state, step_lib.StatefulTrainState)
  assert multidevice.max_diff(jax.device_get(state.variables()), variables) <= 1e-6


def test_eval_uses_the_running_statistics_of_best(reference, tmp_path):
  model, workdir, _, scalars = reference
  best_dir = next((workdir / 'best').iterdir())
  eval_config = lambda path: training.tiny_batchnorm_config(model, mode='eval',
                                                            init_from=str(path))
  results, _ = _run(tmp_path / 'best', eval_config(best_dir))
  evaluated = scalars[int(best_dir.name)]
  assert results['top1'] == pytest.approx(evaluated['eval/top1'])
  assert results['loss'] == pytest.approx(evaluated['eval/loss'], rel=1e-5)
  # Other running statistics, other outputs: eval normalises by them, not by the batch.
  shifted = checkpointing.restore_params(str(best_dir))
  shifted['batch_stats'] = jax.tree.map(lambda s: s + 1.0, shifted['batch_stats'])
  checkpointing.save_params(str(tmp_path / 'shifted'), shifted)
  results, _ = _run(tmp_path / 'run', eval_config(tmp_path / 'shifted'))
  assert results['loss'] != pytest.approx(evaluated['eval/loss'], rel=1e-3)


def _official_file(model: str) -> str:
  golden = 'tiny_restv2' if model.startswith('rest') else 'tiny_litv2'
  return str(family_golden.directory(golden) / f'{golden}.pth')


def _loaded(config):
  """The variables `convert.load_params` gives for `config.init_from`."""
  return convert.load_params(config.init_from, config.model, image_size=config.image_size,
                             drop_head=config.init_drop_head, seed=config.seed,
                             **config.model_overrides.to_dict())


@pytest.mark.parametrize('model', MODELS)
def test_eval_of_an_official_file_uses_its_running_statistics(model, tmp_path):
  config = training.tiny_batchnorm_config(model, mode='eval', init_from=_official_file(model),
                                          init_drop_head=True)
  results, _ = _run(tmp_path, config)
  mesh = multidevice.one_device_mesh()
  with jax.set_mesh(mesh):
    programs = programs_lib.build(config, mesh, None)
    expected = evaluation.evaluate(
        config, programs.task, programs.eval_step,
        jax.device_put(_loaded(config), programs.shardings.variables()), mesh, synthetic_data)
  assert results['loss'] == pytest.approx(expected['loss'], rel=1e-5)
  assert results['top1'] == expected['top1']


def test_finetune_from_an_official_file_starts_from_its_params(tmp_path):
  # One family suffices: the trainer's path is the same for both.
  config = training.tiny_batchnorm_config(
      'litv2_demo', init_from=_official_file('litv2_demo'), init_drop_head=True,
      num_train_steps=1, **{'optim.base_lr': 0.0, 'optim.warmup_start_lr': 0.0,
                            'optim.ema_decay': 0.5})
  state, _ = _run(tmp_path, config)
  # A zero learning rate: the params are the file's, with a fresh head, and so is their
  # moving average, which starts from the loaded weights.
  assert multidevice.max_diff(jax.device_get(state.params), _loaded(config)['params']) == 0
  assert multidevice.max_diff(jax.device_get(state.averaged_variables()['params']),
                              _loaded(config)['params']) == 0


@pytest.mark.slow
def test_8_devices_match_one_device():
  # jit computes BatchNorm's statistics over the global batch: the sharded step is the
  # one-device step, running statistics included (SyncBatchNorm's semantics). One family
  # suffices: both share the BatchNorm layer and the trainer's path.
  one, eight = multidevice.one_device_mesh(), multidevice.eight_device_mesh()
  results = {}
  for name, extra in {'whole': {}, 'grad_accum': {'optim.grad_accum_steps': 2}}.items():
    config = training.tiny_batchnorm_config(
        'litv2_demo', drop_path_rate=0.0, **{'model_overrides.depths': (1, 1, 1, 1)}, **extra)
    (ref, ref_loss), _ = multidevice.one_step(config, one)
    (variables, loss), _ = multidevice.one_step(config, eight)
    results[name] = {'loss': abs(float(loss - ref_loss)),
                     'params': multidevice.max_diff(variables['params'], ref['params']),
                     'batch_stats': multidevice.max_diff(variables['batch_stats'],
                                                         ref['batch_stats']),
                     'stats': ref['batch_stats']}
  for name, diff in results.items():
    assert diff['loss'] < 1e-5 and diff['params'] < 1e-6, (name, diff)
    assert diff['batch_stats'] < 1e-5, (name, diff)
  # Two micro-batches move the running statistics twice, unlike one whole batch.
  assert multidevice.max_diff(results['whole']['stats'], results['grad_accum']['stats']) > 1e-4
