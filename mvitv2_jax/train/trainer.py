"""Trains and evaluates any task's model: the run around the loop of `loop.py`.

The same code runs on one CPU and on many hosts: host batches become global arrays
sharded over every device, params are replicated (or FSDP-sharded with
`config.shard_params`), and XLA inserts the gradient all-reduce.

Before anything is written, the config is validated, the workdir locked and its
config.json compared with the new config; both steps are compiled and checked
against the device memory before the first update.
"""

import contextlib
import logging
import os
import time
from typing import Any, Callable, Sequence

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from mvitv2_jax import convert
from mvitv2_jax import pretrained
from mvitv2_jax import tasks
from mvitv2_jax.ops import platform as ops_platform
from mvitv2_jax.train import checkpointing
from mvitv2_jax.train import distributed
from mvitv2_jax.train import errors
from mvitv2_jax.train import evaluation
from mvitv2_jax.train import loop
from mvitv2_jax.train import memory
from mvitv2_jax.train import metrics
from mvitv2_jax.train import preemption
from mvitv2_jax.train import programs as programs_lib
from mvitv2_jax.train import sharding
from mvitv2_jax.train import validation
from mvitv2_jax.train import workdir as workdir_lib

log = logging.getLogger(__name__)

_TRAIN_REMEDY = ('lower config.batch_size, raise config.optim.grad_accum_steps, or set '
                 'config.shard_params=True or config.model_overrides.remat=True')
_EVAL_REMEDY = 'lower config.eval_batch_size'


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data: tasks.DataSource | None = None,
                       writer: Callable[[str], Any] = metrics.SummaryWriter,
                       devices: Sequence[jax.Device] | None = None) -> Any:
  """Runs `config.mode` ('train' or 'eval') with outputs in `workdir`.

  Args:
    config: the run config (see configs/default.py).
    workdir: checkpoints, TensorBoard files and the resolved config go here;
      a train run resumes from the newest checkpoint in it that verifies.
    data: where batches come from (default: the task's data source for the config).
    writer: `writer(workdir)` makes the metrics writer (`scalars(step, dict)`, `close()`).
    devices: the devices to run on (default: every device of every process).

  Returns:
    The final `TrainState` ('train') or the eval metrics dict ('eval').

  Raises:
    errors.ConfigError: a field is unusable (nothing is written).
    errors.WorkdirBusyError: another trainer runs in `workdir`.
    errors.ConfigMismatchError: `workdir` holds a run of another config.
    errors.DoesNotFitError: a step needs more device memory than there is.
    errors.Diverged: the loss or the params became non-finite.
    errors.Interrupted: SIGINT or SIGTERM; the checkpoint of its step is saved.
  """
  validation.validate(config)
  mesh = sharding.create_mesh(devices)
  validation.check_batch_sizes(config, mesh.size)
  workdir = os.path.abspath(workdir)
  data = data or tasks.for_config(config).data_source(config)
  with _locked(workdir), jax.set_mesh(mesh):
    if config.mode == 'train':
      return _train(config, workdir, mesh, data, writer)
    return _evaluate_only(config, workdir, mesh, data, writer)


@contextlib.contextmanager
def _locked(workdir: str):
  """Holds the workdir's lock (process 0) for the run; every process learns the outcome."""
  lock, error = None, None
  if jax.process_index() == 0:
    try:
      lock = workdir_lib.WorkdirLock(workdir)
    except errors.WorkdirBusyError as e:
      error = e
  if jax.process_count() > 1:
    locked = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not locked and error is None:
      error = errors.WorkdirBusyError(
          f'process 0 could not lock {workdir}: another trainer holds it')
  if error is not None:
    raise error
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


def _check_resumed_config(config: ml_collections.ConfigDict, workdir: str):
  """Refuses a config other than the one the workdir's checkpoints were trained with."""
  states = os.path.join(workdir, checkpointing.CHECKPOINTS_DIR)
  if os.path.isdir(states) and os.listdir(states):
    workdir_lib.check_config(config, workdir)


def _checkpointer(config, workdir: str, task: tasks.Task) -> checkpointing.Checkpointer:
  return checkpointing.Checkpointer(workdir, config.keep_checkpoints,
                                    evaluation.best_metric(config, task), task.higher_is_better)


def _load_init_variables(config: ml_collections.ConfigDict, variables_shardings: Any) -> Any:
  """The model's variables from `config.init_from`, placed in `variables_shardings`.

  The converter checks every shape against the model (BatchNorm's running statistics
  included) and, with `init_drop_head`, initialises a fresh head itself.
  'pretrained:NAME' is a released checkpoint's original file, downloaded into the cache
  once.
  """
  loaded = convert.load_params(
      pretrained.resolve(config.init_from), config.model, num_classes=config.num_classes,
      image_size=config.image_size, drop_head=config.init_drop_head,
      inflate=config.init_inflate, seed=config.seed, **config.model_overrides.to_dict())
  variables = convert.as_variables(loaded)
  return jax.device_put(variables, variables_shardings)


def _compiled_eval_step(programs: programs_lib.Programs, eval_config):
  """The eval step compiled for `eval_config.eval_batch_size`, checked against device memory."""
  compiled = programs.lower_eval(eval_config.eval_batch_size).compile(
      ops_platform.compiler_options(programs.mesh))
  memory.check_fits(compiled, f'The eval step at eval_batch_size {eval_config.eval_batch_size}',
                    _EVAL_REMEDY)
  return compiled


def _evaluate_only(config, workdir, mesh, data, make_writer) -> dict[str, float]:
  """Evaluates `init_from` weights, or else the workdir's latest checkpoint."""
  programs = programs_lib.build(config, mesh, None)
  if config.init_from:
    variables = _load_init_variables(config, programs.shardings.variables())
    averaged = None  # A weights file holds no average.
    step = 0
  else:
    _check_resumed_config(config, workdir)
    ckpt = _checkpointer(config, workdir, programs.task)
    step = ckpt.latest_step()
    if step is None:
      ckpt.close()
      raise errors.ConfigError(
          f'mode=eval needs config.init_from or a checkpoint in {workdir}/checkpoints')
    state = ckpt.restore(step, programs.state)
    variables, averaged = state.variables(), state.averaged_variables()
    ckpt.close()
  eval_config = evaluation.eval_config(config, data, mesh.size)
  eval_fn = _compiled_eval_step(programs, eval_config)
  results = evaluation.evaluate_with_average(eval_config, programs.task, eval_fn, variables,
                                             averaged, mesh, data)
  log.info('Eval of %s: %s', config.init_from or f'step {step}',
           evaluation.describe(programs.task, results))
  writer = make_writer(workdir)
  writer.scalars(step, {f'eval/{k}': v for k, v in results.items()})
  writer.close()
  return results


def _train(config, workdir, mesh, data, make_writer):
  """Resumes or initialises the state, compiles the steps, then runs the loop."""
  # First: a signal from here on stops the run after its next step, saved.
  stop = preemption.StopRequest()
  try:
    programs = programs_lib.build(config, mesh, data)
    epoch_steps, total_steps = programs.steps_per_epoch, programs.total_steps
    _check_resumed_config(config, workdir)
    ckpt = _checkpointer(config, workdir, programs.task)
    try:
      last_saved = ckpt.latest_step()
      if last_saved is not None:
        log.info('Resuming from the checkpoint of step %d.', last_saved)
        state = ckpt.restore(last_saved, programs.state)
      else:
        state = programs.initial_state()
        if config.init_from:
          log.info('Initialising the model from %s.', config.init_from)
          state = state.with_variables(
              _load_init_variables(config, programs.shardings.variables())).restart_average()
      start_step = int(state.step)
      log.info('Training steps %d..%d (%d per epoch) on %d devices.',
               start_step, total_steps, epoch_steps, mesh.size)

      compile_start = time.time()
      train_fn = programs.lower_train().compile(ops_platform.compiler_options(mesh))
      memory.check_fits(train_fn, f'The train step at batch_size {config.batch_size}',
                        _TRAIN_REMEDY)
      eval_config = evaluation.eval_config(config, data, mesh.size)
      eval_fn = _compiled_eval_step(programs, eval_config)
      log.info('Compiled the train and eval steps in %.1f s.', time.time() - compile_start)
      # Only now: a run that could not start leaves config.json as it was.
      if jax.process_index() == 0:
        workdir_lib.write_config(config, workdir)
      distributed.wait_for_every_process(f'mvitv2_jax: compiled, starting at step {start_step}')
      run = loop.TrainLoop(
          config=config, eval_config=eval_config, workdir=workdir, task=programs.task,
          mesh=mesh, data=data, writer=make_writer(workdir), stop=stop, ckpt=ckpt,
          train_fn=train_fn, eval_fn=eval_fn, total_steps=total_steps,
          eval_every=config.eval_every_steps if config.eval_every_steps > 0 else epoch_steps)
      return run.run(state, start_step)
    finally:
      ckpt.close()
  finally:
    stop.restore()
