"""Trains and evaluates MViTv2: the loop around the jitted steps of `step`.

The same code runs on one CPU and on many hosts: host batches become global
arrays sharded over every device, params are replicated (or FSDP-sharded with
`config.shard_params`), and XLA inserts the gradient all-reduce.

Before anything is written, the config is validated, the workdir locked and its
config.json compared with the new config; both steps are compiled and checked
against the device memory before the first update.
"""

import contextlib
import logging
import math
import os
import signal
import time
from typing import Any, Callable

import jax
from jax._src import distributed  # The coordination service's barrier (no public API).
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from mvitv2_jax import convert
from mvitv2_jax.data import images as pipeline
from mvitv2_jax.data import sources
from mvitv2_jax.ops import platform as ops_platform
from mvitv2_jax.train import checkpointing
from mvitv2_jax.train import errors
from mvitv2_jax.train import memory
from mvitv2_jax.train import metrics
from mvitv2_jax.train import optim
from mvitv2_jax.train import preemption
from mvitv2_jax.train import sharding
from mvitv2_jax.train import validation
from mvitv2_jax.train import workdir as workdir_lib
from mvitv2_jax.train.step import (TrainState, abstract_train_state, create_model,
                                   create_train_state, make_eval_step, make_train_step)

log = logging.getLogger(__name__)

# Where batches come from: anything with the three functions of `mvitv2_jax.data.pipeline`
# that the trainer calls (num_examples, create_train_iterator, create_eval_iterator).
DataSource = Any

_TRAIN_REMEDY = ('lower config.batch_size, raise config.optim.grad_accum_steps, or set '
                 'config.shard_params=True or config.model_overrides.remat=True')
_EVAL_REMEDY = 'lower config.eval_batch_size'


def steps_per_epoch(config: ml_collections.ConfigDict, data: DataSource = pipeline) -> int:
  """Updates per pass over the train split (the last partial batch dropped)."""
  n = data.num_examples(config, config.train_split)
  return max(n // config.batch_size, 1)


def num_train_steps(config: ml_collections.ConfigDict, data: DataSource = pipeline) -> int:
  """`config.num_train_steps`, or derived from `config.num_epochs`."""
  if config.num_train_steps > 0:
    return config.num_train_steps
  return int(config.num_epochs * steps_per_epoch(config, data))


def eval_config(config: ml_collections.ConfigDict,
                data: DataSource = pipeline) -> ml_collections.ConfigDict:
  """`config` with `eval_batch_size` no larger than one pass over the eval split needs.

  Args:
    config: the run config.
    data: the data source (for the size of the eval split).

  Returns:
    A copy of `config` whose `eval_batch_size` is at most the split's example
    count rounded up to a multiple of the device count.
  """
  n = jax.device_count()
  examples = data.num_examples(config, config.eval_split)
  needed = -(-examples // n) * n
  if needed >= config.eval_batch_size:
    return config
  log.info('Eval batch %d instead of %d: the %d examples of %r, rounded up to a multiple '
           'of the %d devices.', needed, config.eval_batch_size, examples, config.eval_split, n)
  capped = config.copy_and_resolve_references()
  capped.eval_batch_size = needed
  return capped


def evaluate(config: ml_collections.ConfigDict, eval_fn, params: Any,
             mesh: jax.sharding.Mesh, data: DataSource = pipeline) -> dict[str, float]:
  """One pass over the eval split; padded examples count zero.

  Args:
    config: the run config (eval split and batch size).
    eval_fn: the jitted `eval_step`.
    params: model params.
    mesh: the device mesh.
    data: the data source.

  Returns:
    Mean `loss`, `top1`, `top5` and the example `count`.
  """
  acc = metrics.Accumulator()
  for batch in sharding.prefetch(data.create_eval_iterator(config), mesh):
    acc.add(eval_fn(params, batch))
  sums = acc.sums()
  if not sums:
    raise errors.RunError(f'The eval split {config.eval_split!r} gave no batches.')
  count = sums['count']
  return {'loss': sums['loss'] / count, 'top1': sums['top1'] / count,
          'top5': sums['top5'] / count, 'count': count}


def _load_init_params(config: ml_collections.ConfigDict,
                      params_shardings: Any) -> Any:
  """Params from `config.init_from`, placed in `params_shardings`.

  The converter checks every shape against the model and, with
  `init_drop_head`, initialises a fresh head itself.
  """
  loaded = convert.load_params(
      config.init_from, config.model, num_classes=config.num_classes,
      image_size=config.image_size, drop_head=config.init_drop_head,
      inflate=config.init_inflate, seed=config.seed, **config.model_overrides.to_dict())
  return jax.device_put(loaded, params_shardings)


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data: DataSource | None = None,
                       writer: Callable[[str], Any] = metrics.SummaryWriter) -> Any:
  """Runs `config.mode` ('train' or 'eval') with outputs in `workdir`.

  Args:
    config: the run config (see configs/default.py).
    workdir: checkpoints, TensorBoard files and the resolved config go here;
      a train run resumes from the newest checkpoint in it that verifies.
    data: where batches come from (default: TFDS through `mvitv2_jax.data.pipeline`, or
      `mvitv2_jax.data.video` for a config with a `video` section).
    writer: `writer(workdir)` makes the metrics writer (`scalars(step, dict)`, `close()`).

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
  validation.check_batch_sizes(config, jax.device_count())
  workdir = os.path.abspath(workdir)
  data = data or sources.for_config(config)
  with _locked(workdir):
    mesh = sharding.create_mesh()
    with jax.set_mesh(mesh):
      if config.mode == 'train':
        return _train(config, workdir, mesh, data, writer)
      return _evaluate_only(config, workdir, mesh, data, writer)


def _abstract_batch(batch_size: int, config: ml_collections.ConfigDict,
                    input_size: tuple[int, ...], mesh: jax.sharding.Mesh, *,
                    train: bool) -> dict[str, Any]:
  """Shape structs of a global batch, as `sharding.host_to_global` places it."""
  s = sharding.data_sharding(mesh)
  example = sources.example_shape(config, input_size, train=train)
  batch = {'image': jax.ShapeDtypeStruct((batch_size, *example), jnp.float32, sharding=s),
           'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=s)}
  if not train:
    batch['mask'] = jax.ShapeDtypeStruct((batch_size,), jnp.bool_, sharding=s)
  return batch


def _compiled_eval_step(model, mesh, params_abstract, params_shardings, config):
  """The eval step compiled for `config.eval_batch_size`, checked against device memory."""
  compiled = make_eval_step(model, mesh, params_shardings).lower(
      params_abstract,
      _abstract_batch(config.eval_batch_size, config, model.cfg.input_size, mesh,
                      train=False)).compile(ops_platform.compiler_options(mesh))
  memory.check_fits(compiled, f'The eval step at eval_batch_size {config.eval_batch_size}',
                    _EVAL_REMEDY)
  return compiled


def _evaluate_only(config, workdir, mesh, data, make_writer) -> dict[str, float]:
  """Evaluates `init_from` weights, or else the workdir's latest checkpoint."""
  model = create_model(config)
  tx = optim.create_optimizer(config, lambda _: 0.0)
  abstract, shardings = abstract_train_state(config, model, tx, mesh)
  if config.init_from:
    params = _load_init_params(config, shardings.params)
    step = 0
  else:
    _check_resumed_config(config, workdir)
    ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
    step = ckpt.latest_step()
    if step is None:
      ckpt.close()
      raise errors.ConfigError(
          f'mode=eval needs config.init_from or a checkpoint in {workdir}/checkpoints')
    params = ckpt.restore(step, abstract).params
    ckpt.close()
  config = eval_config(config, data)
  eval_fn = _compiled_eval_step(model, mesh, abstract.params, shardings.params, config)
  results = evaluate(config, eval_fn, params, mesh, data)
  log.info('Eval of %s: %s', config.init_from or f'step {step}', results)
  writer = make_writer(workdir)
  writer.scalars(step, {f'eval/{k}': v for k, v in results.items()})
  writer.close()
  return results


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _sane_loss_bound(num_classes: int) -> float:
  """Ten times the loss of a uniform guess: params whose loss exceeds it have diverged."""
  return 10 * max(math.log(num_classes), 1.0)


def _divergence(problem: str, first_bad_state: int, next_loss: dict[int, float],
                start_step: int, config: ml_collections.ConfigDict,
                ckpt: checkpointing.Checkpointer, workdir: str) -> errors.Diverged:
  """The error for a run whose state after `first_bad_state` updates is not usable.

  A checkpoint is named good only if its params are finite (checked at save) and gave
  a finite loss below `_sane_loss_bound` at the next update (`next_loss`, known for
  the states of this process: the one it started from and those it saved). Saved
  states newer than the good one are moved to corrupt/, so a restart resumes there.

  Args:
    problem: what went wrong, e.g. 'Loss is nan at step 8'.
    first_bad_state: updates done by the first state known to be bad.
    next_loss: state (updates done) -> the loss of the update that followed it.
    start_step: the state this process started from.
    config: the run config.
    ckpt: the run's checkpointer.
    workdir: the run directory.

  Returns:
    The error to raise, with one line naming the good checkpoint or saying there is none.
  """
  bound = _sane_loss_bound(config.num_classes)
  good = -1
  if jax.process_index() == 0:
    candidates = [s for s, loss in next_loss.items()
                  if s < first_bad_state and np.isfinite(loss) and loss <= bound]
    while candidates and good < 0:
      step = max(candidates)
      candidates.remove(step)
      if step in ckpt.saved_steps() and ckpt.newest_good_step(below=step + 1) == step:
        good = step
    for step in ckpt.saved_steps():
      if step > good and step >= start_step:
        loss = next_loss.get(step)
        ckpt.quarantine_diverged(step, 'training from it diverged' if loss is None else
                                 f'its params gave a loss of {loss:.4g} at the next step')
  good = checkpointing.broadcast(good)
  states = os.path.join(workdir, checkpointing.CHECKPOINTS_DIR)
  if good < 0:
    older = (f'; the checkpoints from before step {start_step} were not checked'
             if start_step > 0 else '')
    return errors.Diverged(
        f'{problem}; stopping. No checkpoint since step {start_step} is good (finite params '
        f'that gave a finite loss below {bound:.3g} at the next step){older}. Lower '
        f'config.optim.base_lr and start again in a new workdir.')
  return errors.Diverged(
      f'{problem}; stopping. The last good checkpoint is step {good} in {states} (its '
      f'params gave a loss of {next_loss[good]:.4g} at step {good + 1}); any later ones '
      f'were moved to {os.path.join(workdir, checkpointing.CORRUPT_DIR)}. Lower '
      f'config.optim.base_lr and start a new workdir from it with '
      f'--config.init_from={os.path.join(states, str(good))}.')


# How long processes wait for each other to finish compiling before the first step.
_START_TIMEOUT_MS = 30 * 60 * 1000


def _wait_for_every_process(name: str):
  """A barrier outside XLA: gloo gives a late peer only 30 s to join the first collective."""
  if jax.process_count() > 1:
    distributed.global_state.client.wait_at_barrier(name, timeout_in_ms=_START_TIMEOUT_MS)


def _train(config, workdir, mesh, data, make_writer) -> TrainState:
  """The train loop: resume, step, log, evaluate, checkpoint, stop cleanly."""
  # First: a signal from here on stops the run after its next step, saved.
  stop = preemption.StopRequest()
  try:
    return _train_loop(config, workdir, mesh, data, make_writer, stop)
  finally:
    stop.restore()


def _train_loop(config, workdir, mesh, data, make_writer,
                stop: preemption.StopRequest) -> TrainState:
  epoch_steps = steps_per_epoch(config, data)
  total_steps = num_train_steps(config, data)
  eval_every = (config.eval_every_steps if config.eval_every_steps > 0
                else epoch_steps)
  schedule = optim.create_schedule(config, epoch_steps, total_steps)
  tx = optim.create_optimizer(config, schedule)
  model = create_model(config)
  _check_resumed_config(config, workdir)
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  try:
    last_saved = ckpt.latest_step()
    abstract, shardings = abstract_train_state(config, model, tx, mesh)
    if last_saved is not None:
      log.info('Resuming from the checkpoint of step %d.', last_saved)
      state = ckpt.restore(last_saved, abstract)
    else:
      state, _ = create_train_state(config, model, tx, mesh)
      if config.init_from:
        log.info('Initialising params from %s.', config.init_from)
        state = state.replace(params=_load_init_params(config, shardings.params))
    start_step = int(state.step)
    log.info('Training steps %d..%d (%d per epoch) on %d devices.',
             start_step, total_steps, epoch_steps, jax.device_count())

    compile_start = time.time()
    train_fn = make_train_step(config, model, tx, schedule, mesh, shardings).lower(
        abstract, _abstract_batch(config.batch_size, config, model.cfg.input_size, mesh,
                                  train=True)).compile(ops_platform.compiler_options(mesh))
    memory.check_fits(train_fn, f'The train step at batch_size {config.batch_size}',
                      _TRAIN_REMEDY)
    eval_cfg = eval_config(config, data)
    eval_fn = _compiled_eval_step(model, mesh, abstract.params, shardings.params, eval_cfg)
    log.info('Compiled the train and eval steps in %.1f s.', time.time() - compile_start)
    # Only now: a run that could not start leaves config.json as it was.
    if jax.process_index() == 0:
      workdir_lib.write_config(config, workdir)
    _wait_for_every_process(f'mvitv2_jax: compiled, starting at step {start_step}')
    return _run(config, workdir, mesh, data, make_writer, stop, ckpt, state, train_fn,
                eval_fn, eval_cfg, start_step, total_steps, eval_every)
  finally:
    ckpt.close()


def _run(config, workdir, mesh, data, make_writer, stop, ckpt, state, train_fn, eval_fn,
         eval_cfg, start_step, total_steps, eval_every) -> TrainState:
  """Steps from `start_step` to `total_steps`: log, evaluate, checkpoint, stop on a signal."""
  writer = make_writer(workdir)
  batches = sharding.prefetch(
      data.create_train_iterator(config, start_step=start_step), mesh)
  pending = []  # Step metrics not yet fetched: fetching would sync.
  # The loss each saved (or the starting) state gave at the update after it.
  next_loss, awaiting = {}, {start_step}
  window_start, window_step = time.time(), start_step
  try:
    for step in range(start_step, total_steps):
      state, step_metrics = train_fn(state, next(batches))
      pending.append(step_metrics)
      done = step + 1
      if step == start_step:
        # The first step's time is not throughput: the window starts after it.
        jax.block_until_ready(step_metrics)
        window_start, window_step = time.time(), done
      at_log = done % config.log_every_steps == 0
      signum = stop.signal(at_log)
      is_last = done == total_steps or signum
      save = done % config.checkpoint_every_steps == 0 or is_last
      run_eval = done % eval_every == 0 or done == total_steps
      if not (at_log or save or run_eval or is_last):
        continue

      # Check the loss before anything is saved: a NaN state is never written.
      history = jax.device_get(pending)
      pending = []
      for i, m in enumerate(history):
        update = done - len(history) + i + 1
        # The loss of update k is that of the params after k - 1 updates.
        if update - 1 in awaiting:
          awaiting.discard(update - 1)
          next_loss[update - 1] = float(m['loss'])
        if not np.isfinite(m['loss']):
          raise _divergence(f'Loss is {m["loss"]} at step {update}', update - 1, next_loss,
                            start_step, config, ckpt, workdir)
      means = {k: float(np.mean([m[k] for m in history])) for k in history[0]}
      scalars = {f'train/{k}': v for k, v in means.items()}
      speed = 'first step'  # Nothing timed yet when it is also a log step.
      if done > window_step:
        steps_per_s = (done - window_step) / (time.time() - window_start)
        scalars['train/images_per_s'] = steps_per_s * config.batch_size
        speed = (f'{scalars["train/images_per_s"]:.1f} img/s  ETA '
                 f'{(total_steps - done) / steps_per_s / 60:.1f} min')
      window_start, window_step = time.time(), done
      log.info(
          'step %d/%d  loss %.4f  acc %.3f  lr %.3g  |g| %.3f  %s', done,
          total_steps, means['loss'], means['accuracy'], means['lr'],
          means['grad_norm'], speed)
      writer.scalars(done, scalars)

      if save:
        if not bool(_all_finite(state.params)):
          raise _divergence(f'The params are not finite after step {done}', done,
                            next_loss, start_step, config, ckpt, workdir)
        ckpt.save(done, state)
        awaiting.add(done)
      if run_eval:
        results = evaluate(eval_cfg, eval_fn, state.params, mesh, data)
        log.info('step %d eval: loss %.4f  top-1 %.4f  top-5 %.4f '
                 '(%d images)', done, results['loss'], results['top1'],
                 results['top5'], results['count'])
        writer.scalars(done, {f'eval/{k}': v for k, v in results.items()})
        ckpt.save_best(done, state.params, results['top1'])
        window_start = time.time()  # Eval time is not training throughput.
      if signum and done < total_steps:  # A run that got to its end has finished.
        name = signal.Signals(signum).name
        raise errors.Interrupted(
            signum, done, f'Stopped on {name} at step {done}; its checkpoint is saved in '
            f'{workdir}/{checkpointing.CHECKPOINTS_DIR}. Run the same command to resume.')
  finally:
    batches.close()
    writer.close()
  return state
