"""The step loop of a run: update, log, evaluate, checkpoint, stop cleanly on a signal."""

import dataclasses
import logging
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mvitv2_jax import tasks
from mvitv2_jax.train import checkpointing
from mvitv2_jax.train import divergence
from mvitv2_jax.train import errors
from mvitv2_jax.train import evaluation
from mvitv2_jax.train import preemption
from mvitv2_jax.train import sharding
from mvitv2_jax.train.step import TrainState

log = logging.getLogger(__name__)


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


@dataclasses.dataclass
class TrainLoop:
  """Everything the steps of a run need, compiled and opened by the trainer.

  Attributes:
    config: the run config.
    eval_config: the config with the eval batch the eval step was compiled for.
    workdir: the run directory.
    task: the task.
    mesh: the device mesh.
    data: the data source.
    writer: the metrics writer (`scalars(step, dict)`, `close()`).
    stop: the signal handler's request to stop.
    ckpt: the run's checkpointer.
    train_fn: the compiled train step.
    eval_fn: the compiled eval step.
    total_steps: the step the run ends at.
    eval_every: steps between evaluations.
  """
  config: ml_collections.ConfigDict
  eval_config: ml_collections.ConfigDict
  workdir: str
  task: tasks.Task
  mesh: jax.sharding.Mesh
  data: tasks.DataSource
  writer: Any
  stop: preemption.StopRequest
  ckpt: checkpointing.Checkpointer
  train_fn: Any
  eval_fn: Any
  total_steps: int
  eval_every: int
  # The loss each saved (or the starting) state gave at the update after it.
  _next_loss: dict[int, float] = dataclasses.field(default_factory=dict)
  _awaiting: set[int] = dataclasses.field(default_factory=set)

  def run(self, state: TrainState, start_step: int) -> TrainState:
    """Steps from `start_step` to `total_steps`; returns the final state.

    Raises:
      errors.Diverged: the loss or the params became non-finite or past the bound.
      errors.Interrupted: a signal stopped the run; its checkpoint is saved.
    """
    config = self.config
    self._start_step, self._awaiting = start_step, {start_step}
    batches = sharding.prefetch(
        self.data.create_train_iterator(config, start_step=start_step), self.mesh)
    pending = []  # Step metrics not yet fetched: fetching would sync.
    self._window = (time.time(), start_step)
    try:
      for step in range(start_step, self.total_steps):
        state, step_metrics = self.train_fn(state, next(batches))
        pending.append(step_metrics)
        done = step + 1
        if step == start_step:
          # The first step's time is not throughput: the window starts after it.
          jax.block_until_ready(step_metrics)
          self._window = (time.time(), done)
        at_log = done % config.log_every_steps == 0
        signum = self.stop.signal(at_log)
        is_last = done == self.total_steps or signum
        save = done % config.checkpoint_every_steps == 0 or is_last
        run_eval = done % self.eval_every == 0 or done == self.total_steps
        if not (at_log or save or run_eval or is_last):
          continue
        # The loss is checked before anything is saved: a NaN state is never written.
        self._log(done, jax.device_get(pending))
        pending = []
        if save:
          self._save(done, state)
        if run_eval:
          self._evaluate(done, state)
        if signum and done < self.total_steps:  # A run that got to its end has finished.
          name = signal.Signals(signum).name
          raise errors.Interrupted(
              signum, done, f'Stopped on {name} at step {done}; its checkpoint is saved in '
              f'{self.workdir}/{checkpointing.CHECKPOINTS_DIR}. Run the same command to resume.')
    finally:
      batches.close()
      self.writer.close()
    return state

  def _diverged(self, problem: str, first_bad_state: int) -> errors.Diverged:
    return divergence.diverged(problem, first_bad_state, self._next_loss, self._start_step,
                               self.task.divergence_bound(self.config), self.ckpt,
                               self.workdir)

  def _log(self, done: int, history: list[dict[str, Any]]):
    """Checks and logs the metrics of the steps up to `done`."""
    for i, m in enumerate(history):
      update = done - len(history) + i + 1
      # The loss of update k is that of the params after k - 1 updates.
      if update - 1 in self._awaiting:
        self._awaiting.discard(update - 1)
        self._next_loss[update - 1] = float(m['loss'])
      if not np.isfinite(m['loss']):
        raise self._diverged(f'Loss is {m["loss"]} at step {update}', update - 1)
    means = {k: float(np.mean([m[k] for m in history])) for k in history[0]}
    scalars = {f'train/{k}': v for k, v in means.items()}
    speed = 'first step'  # Nothing timed yet when it is also a log step.
    window_start, window_step = self._window
    if done > window_step:
      steps_per_s = (done - window_step) / (time.time() - window_start)
      scalars['train/images_per_s'] = steps_per_s * self.config.batch_size
      speed = (f'{scalars["train/images_per_s"]:.1f} img/s  ETA '
               f'{(self.total_steps - done) / steps_per_s / 60:.1f} min')
    self._window = (time.time(), done)
    log.info('step %d/%d  loss %.4f  %s  lr %.3g  |g| %.3f  %s', done, self.total_steps,
             means['loss'], self.task.format_train(means), means['lr'], means['grad_norm'],
             speed)
    self.writer.scalars(done, scalars)

  def _save(self, done: int, state: TrainState):
    if not bool(_all_finite(state.variables())):
      raise self._diverged(f'The params are not finite after step {done}', done)
    self.ckpt.save(done, state)
    self._awaiting.add(done)

  def _evaluate(self, done: int, state: TrainState):
    averaged = state.averaged_variables()
    results = evaluation.evaluate_with_average(self.eval_config, self.task, self.eval_fn,
                                               state.variables(), averaged, self.mesh, self.data)
    log.info('step %d eval: %s', done, evaluation.describe(self.task, results))
    self.writer.scalars(done, {f'eval/{k}': v for k, v in results.items()})
    kept = state.variables() if averaged is None else averaged
    self.ckpt.save_best(done, checkpointing.weights_of(kept),
                        results[evaluation.best_metric(self.config, self.task)])
    self._window = (time.time(), self._window[1])  # Eval time is not training throughput.
