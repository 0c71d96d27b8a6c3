"""One pass over the eval split, and the eval batch size a run uses.

A run that keeps a moving average of its variables (`config.optim.ema_decay`) evaluates
both; the average's metrics are prefixed `ema_`, and it is the average that best/ keeps,
chosen by its own metric: what the recipes that keep one report.
"""

import contextlib
import logging

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from mvitv2_jax import tasks
from mvitv2_jax.train import errors
from mvitv2_jax.train import sharding

log = logging.getLogger(__name__)


def eval_config(config: ml_collections.ConfigDict, data: tasks.DataSource,
                num_devices: int) -> ml_collections.ConfigDict:
  """`config` with the eval batch a run on `num_devices` uses.

  The eval batch is rounded up to a multiple of the device count (padding examples are
  masked), and capped at what one pass over the eval split needs.

  Args:
    config: the run config.
    data: the data source (for the size of the eval split).
    num_devices: devices of the mesh.

  Returns:
    `config`, or a copy with another `eval_batch_size`.
  """
  examples = data.num_examples(config, config.eval_split)
  rounded = -(-config.eval_batch_size // num_devices) * num_devices
  needed = -(-examples // num_devices) * num_devices
  size = min(rounded, needed)
  if size == config.eval_batch_size:
    return config
  if size == needed:
    log.info('Eval batch %d instead of %d: the %d examples of %r, rounded up to a multiple '
             'of the %d devices.', size, config.eval_batch_size, examples, config.eval_split,
             num_devices)
  else:
    log.info('Eval batch %d instead of %d: a multiple of the %d devices.', size,
             config.eval_batch_size, num_devices)
  changed = config.copy_and_resolve_references()
  changed.eval_batch_size = size
  return changed


def evaluate(config: ml_collections.ConfigDict, task: tasks.Task, eval_fn, variables,
             mesh: jax.sharding.Mesh, data: tasks.DataSource) -> dict[str, float]:
  """One pass over the eval split; padded examples count zero.

  Args:
    config: the run config (eval split and batch size).
    task: the task (its evaluator).
    eval_fn: the compiled eval step.
    variables: the model's params and collections (`TrainState.variables()`).
    mesh: the device mesh.
    data: the data source.

  Returns:
    The task's metrics, with `count`, and `unreadable`: the examples left out because
    they failed to decode (each named in a warning), over all processes.
  """
  evaluator = task.evaluator(config)
  batches = 0
  source = data.create_eval_iterator(config)
  # Closed on every path: its thread must not outlive the pass.
  with contextlib.closing(sharding.prefetch(source, mesh)) as it:
    for batch in it:
      evaluator.add(eval_fn(variables, batch))
      batches += 1
  if not batches:
    raise errors.RunError(f'The eval split {config.eval_split!r} gave no batches.')
  unreadable = getattr(source, 'unreadable', 0)
  if jax.process_count() > 1:
    unreadable = int(np.sum(multihost_utils.process_allgather(np.int32(unreadable))))
  if unreadable:
    log.warning('%d examples of %r failed to decode and are not counted (named above).',
                unreadable, config.eval_split)
  return {**evaluator.result(), 'unreadable': float(unreadable)}


EMA_PREFIX = 'ema_'


def best_metric(config: ml_collections.ConfigDict, task: tasks.Task) -> str:
  """The eval metric that selects best/: the task's, of the average when the run keeps one."""
  return (EMA_PREFIX if config.optim.ema_decay else '') + task.best_metric


def evaluate_with_average(config: ml_collections.ConfigDict, task: tasks.Task, eval_fn,
                          variables, averaged, mesh: jax.sharding.Mesh,
                          data: tasks.DataSource) -> dict[str, float]:
  """`evaluate` of `variables` and, unless None, of their moving average `averaged`."""
  results = evaluate(config, task, eval_fn, variables, mesh, data)
  if averaged is not None:
    results.update({EMA_PREFIX + k: v for k, v in
                    evaluate(config, task, eval_fn, averaged, mesh, data).items()})
  return results


def describe(task: tasks.Task, results: dict[str, float]) -> str:
  """The task's eval line, with the average's after it."""
  averaged = {k[len(EMA_PREFIX):]: v for k, v in results.items() if k.startswith(EMA_PREFIX)}
  return task.format_eval(results) + (f'  | EMA: {task.format_eval(averaged)}' if averaged
                                      else '')
