"""Trains and evaluates MViTv2: the loop around the jitted steps of `step`.

The same code runs on one CPU and on many hosts: host batches become global
arrays sharded over every device, params are replicated (or FSDP-sharded with
`config.shard_params`), and XLA inserts the gradient all-reduce.
"""

import logging
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from mvitv2_jax import convert
from mvitv2_jax.data import pipeline
from mvitv2_jax.data import sources
from mvitv2_jax.train import checkpointing
from mvitv2_jax.train import metrics
from mvitv2_jax.train import optim
from mvitv2_jax.train import sharding
from mvitv2_jax.train.step import (TrainState, abstract_train_state, create_model,
                                   create_train_state, make_eval_step, make_train_step)

log = logging.getLogger(__name__)

# Where batches come from: anything with the three functions of `mvitv2_jax.data.pipeline`
# that the trainer calls (num_examples, create_train_iterator, create_eval_iterator).
DataSource = Any


def steps_per_epoch(config: ml_collections.ConfigDict, data: DataSource = pipeline) -> int:
  """Updates per pass over the train split (the last partial batch dropped)."""
  n = data.num_examples(config, config.train_split)
  return max(n // config.batch_size, 1)


def num_train_steps(config: ml_collections.ConfigDict, data: DataSource = pipeline) -> int:
  """`config.num_train_steps`, or derived from `config.num_epochs`."""
  if config.num_train_steps > 0:
    return config.num_train_steps
  return int(config.num_epochs * steps_per_epoch(config, data))


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
    raise ValueError(f'The eval split {config.eval_split!r} gave no batches.')
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


def _check_batch_sizes(config: ml_collections.ConfigDict):
  n = jax.device_count()
  k = config.optim.grad_accum_steps
  if config.batch_size % (n * k):
    raise ValueError(f'batch_size {config.batch_size} must divide by '
                     f'devices ({n}) x grad_accum_steps ({k}).')
  if config.eval_batch_size % n:
    raise ValueError(f'eval_batch_size {config.eval_batch_size} must divide '
                     f'by the device count ({n}).')


class _Preemption:
  """Turns SIGTERM into a flag the loop polls, so it can save and exit."""

  def __init__(self):
    self._flag = threading.Event()
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    # Only set the flag: the handler runs between two bytecodes of the main thread,
    # possibly inside a log write, where writing to the same stream again fails.
    del signum, frame
    self._flag.set()

  def requested(self, at_boundary: bool) -> bool:
    """Whether to stop now; all processes agree, checked at log boundaries."""
    if jax.process_count() == 1:
      return self._flag.is_set()
    if not at_boundary:
      return False
    flags = multihost_utils.process_allgather(np.int32(self._flag.is_set()))
    return bool(np.max(flags))

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def _write_config(config: ml_collections.ConfigDict, workdir: str):
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data: DataSource | None = None,
                       writer: Callable[[str], Any] = metrics.SummaryWriter) -> Any:
  """Runs `config.mode` ('train' or 'eval') with outputs in `workdir`.

  Args:
    config: the run config (see configs/default.py).
    workdir: checkpoints, TensorBoard files and the resolved config go here;
      a train run resumes from the latest checkpoint found in it.
    data: where batches come from (default: TFDS through `mvitv2_jax.data.pipeline`, or
      `mvitv2_jax.data.video` for a config with a `video` section).
    writer: `writer(workdir)` makes the metrics writer (`scalars(step, dict)`, `close()`).

  Returns:
    The final `TrainState` ('train') or the eval metrics dict ('eval').
  """
  workdir = os.path.abspath(workdir)
  data = data or sources.for_config(config)
  _write_config(config, workdir)
  _check_batch_sizes(config)
  mesh = sharding.create_mesh()
  with jax.set_mesh(mesh):
    if config.mode == 'train':
      return _train(config, workdir, mesh, data, writer)
    if config.mode == 'eval':
      return _evaluate_only(config, workdir, mesh, data, writer)
  raise ValueError(f"mode must be 'train' or 'eval', not {config.mode!r}.")


def _evaluate_only(config, workdir, mesh, data, make_writer) -> dict[str, float]:
  """Evaluates `init_from` weights, or else the workdir's latest checkpoint."""
  model = create_model(config)
  tx = optim.create_optimizer(config, lambda _: 0.0)
  if config.init_from:
    # Only the params' shapes are needed, to place the loaded params.
    def init(rng):
      images = jnp.zeros((1, *model.cfg.input_size, 3))
      return model.init({'params': rng}, images, train=False)['params']

    params_shardings = sharding.state_shardings(
        jax.eval_shape(init, jax.random.PRNGKey(config.seed)), mesh,
        config.shard_params)
    params = _load_init_params(config, params_shardings)
    step = 0
  else:
    ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
    step = ckpt.latest_step()
    if step is None:
      raise ValueError(f'mode=eval needs init_from or a checkpoint in {workdir}.')
    abstract, shardings = abstract_train_state(config, model, tx, mesh)
    params = ckpt.restore(step, abstract).params
    params_shardings = shardings.params
    ckpt.close()
  eval_fn = make_eval_step(model, mesh, params_shardings)
  results = evaluate(config, eval_fn, params, mesh, data)
  log.info('Eval of %s: %s', config.init_from or f'step {step}', results)
  writer = make_writer(workdir)
  writer.scalars(step, {f'eval/{k}': v for k, v in results.items()})
  writer.close()
  return results


def _train(config, workdir, mesh, data, make_writer) -> TrainState:
  """The train loop: resume, step, log, evaluate, checkpoint, stop cleanly."""
  epoch_steps = steps_per_epoch(config, data)
  total_steps = num_train_steps(config, data)
  eval_every = (config.eval_every_steps if config.eval_every_steps > 0
                else epoch_steps)
  schedule = optim.create_schedule(config, epoch_steps, total_steps)
  tx = optim.create_optimizer(config, schedule)
  model = create_model(config)
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  last_saved = ckpt.latest_step()
  if last_saved is not None:
    log.info('Resuming from the checkpoint of step %d.', last_saved)
    abstract, shardings = abstract_train_state(config, model, tx, mesh)
    state = ckpt.restore(last_saved, abstract)
  else:
    state, shardings = create_train_state(config, model, tx, mesh)
    if config.init_from:
      log.info('Initialising params from %s.', config.init_from)
      state = state.replace(
          params=_load_init_params(config, shardings.params))
  start_step = int(state.step)
  log.info('Training steps %d..%d (%d per epoch) on %d devices.',
               start_step, total_steps, epoch_steps, jax.device_count())

  train_fn = make_train_step(config, model, tx, schedule, mesh, shardings)
  eval_fn = make_eval_step(model, mesh, shardings.params)
  writer = make_writer(workdir)
  preemption = _Preemption()
  batches = sharding.prefetch(
      data.create_train_iterator(config, start_step=start_step), mesh)
  pending = []  # Step metrics not yet fetched: fetching would sync.
  window_start, window_step = time.time(), start_step
  try:
    for step in range(start_step, total_steps):
      state, step_metrics = train_fn(state, next(batches))
      pending.append(step_metrics)
      done = step + 1
      if step == start_step:
        # Compilation is not throughput: the first window starts after it.
        jax.block_until_ready(step_metrics)
        log.info('First step (with compilation) took %.1f s.',
                     time.time() - window_start)
        window_start, window_step = time.time(), done
      at_log = done % config.log_every_steps == 0
      stop = preemption.requested(at_log)
      is_last = done == total_steps or stop
      save = done % config.checkpoint_every_steps == 0 or is_last
      run_eval = done % eval_every == 0 or done == total_steps
      if not (at_log or save or run_eval or is_last):
        continue

      # Check the loss before anything is saved: a NaN state is never written.
      history = jax.device_get(pending)
      pending = []
      for i, m in enumerate(history):
        if not np.isfinite(m['loss']):
          bad_step = done - len(history) + i + 1
          raise FloatingPointError(
              f'Loss is {m["loss"]} at step {bad_step}; stopping. The last '
              f'good checkpoint is step {last_saved} in {workdir}.')
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
        ckpt.save(done, state)
        last_saved = done
      if run_eval:
        results = evaluate(config, eval_fn, state.params, mesh, data)
        log.info('step %d eval: loss %.4f  top-1 %.4f  top-5 %.4f '
                     '(%d images)', done, results['loss'], results['top1'],
                     results['top5'], results['count'])
        writer.scalars(done, {f'eval/{k}': v for k, v in results.items()})
        ckpt.save_best(done, state.params, results['top1'])
        window_start = time.time()  # Eval time is not training throughput.
      if stop:
        log.warning('Stopped at step %d on SIGTERM (checkpoint saved).',
                        done)
        break
  finally:
    batches.close()
    preemption.restore()
    ckpt.wait_until_finished()
    ckpt.close()
    writer.close()
  return state
