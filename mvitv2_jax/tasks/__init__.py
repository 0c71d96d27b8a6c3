"""The tasks the trainer runs; a model family names the task its models are trained for.

`base.py` says what the train loop asks of a task; `classification.py` is image and video
classification.
"""

import ml_collections

from mvitv2_jax import models
from mvitv2_jax.tasks.base import DataSource, Evaluator, SumEvaluator, Task
from mvitv2_jax.tasks.classification import Classification

_TASKS = {task.name: task for task in (Classification(),)}


def get(name: str) -> Task:
  """The task called `name`."""
  if name not in _TASKS:
    raise ValueError(f'Unknown task {name!r}; known: {", ".join(sorted(_TASKS))}.')
  return _TASKS[name]


def for_config(config: ml_collections.ConfigDict) -> Task:
  """The task of the family of `config.model`."""
  return get(models.family_of(config.model).task)


__all__ = ['Classification', 'DataSource', 'Evaluator', 'SumEvaluator', 'Task', 'for_config',
           'get']
