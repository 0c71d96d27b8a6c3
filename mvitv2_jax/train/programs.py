"""The programs a run compiles: the task's model, the optimizer, the train state and the
jitted steps of a config, with the abstract arguments to lower them on.

The trainer runs these, and `tools/compile_report.py` and `tools/benchmark.py` compile
the same ones, so a figure measured there is a figure of the trainer's own steps.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import optax

from mvitv2_jax import tasks
from mvitv2_jax.train import optim
from mvitv2_jax.train import sharding
from mvitv2_jax.train import step as step_lib


def steps_per_epoch(config: ml_collections.ConfigDict, data: tasks.DataSource) -> int:
  """Updates per pass over the train split (the last partial batch dropped)."""
  n = data.num_examples(config, config.train_split)
  return max(n // config.batch_size, 1)


def num_train_steps(config: ml_collections.ConfigDict, data: tasks.DataSource) -> int:
  """`config.num_train_steps`, or derived from `config.num_epochs`."""
  if config.num_train_steps > 0:
    return config.num_train_steps
  return int(config.num_epochs * steps_per_epoch(config, data))


@dataclasses.dataclass(frozen=True)
class Programs:
  """A config's model, optimizer and jitted steps over a mesh.

  Attributes:
    config: the run config.
    task: its task.
    model: the Flax module.
    tx: the optimizer.
    schedule: the learning-rate schedule.
    mesh: the device mesh.
    state: the abstract train state, carrying its shardings (what a restore needs).
    shardings: the train state's shardings.
    train_step: `(state, batch) -> (state, metrics)`, the state donated.
    eval_step: `(variables, batch) -> the task's eval outputs` (`TrainState.variables()`).
    steps_per_epoch: updates per pass over the train split (None without data sizes).
    total_steps: updates of the whole run (None without data sizes).
  """
  config: ml_collections.ConfigDict
  task: tasks.Task
  model: nn.Module
  tx: optax.GradientTransformation
  schedule: Callable[[Any], Any]
  mesh: jax.sharding.Mesh
  state: step_lib.TrainState
  shardings: Any
  train_step: Any
  eval_step: Any
  steps_per_epoch: int | None
  total_steps: int | None

  def batch(self, batch_size: int, *, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    """Shape structs of a global batch, placed as `sharding.host_to_global` places it."""
    data = sharding.data_sharding(self.mesh)
    spec = self.task.batch_spec(self.config, self.model, batch_size, train=train)
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=data) for k, v in spec.items()}

  def lower_train(self) -> jax.stages.Lowered:
    """The train step lowered for `config.batch_size`."""
    return self.train_step.lower(self.state, self.batch(self.config.batch_size, train=True))

  def lower_eval(self, batch_size: int) -> jax.stages.Lowered:
    """The eval step lowered for `batch_size` examples."""
    return self.eval_step.lower(self.state.variables(), self.batch(batch_size, train=False))

  def initial_state(self) -> step_lib.TrainState:
    """The state at step 0, initialised directly in its shardings."""
    return step_lib.create_train_state(self.config, self.task, self.model, self.tx,
                                       self.mesh)[0]


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
          data: tasks.DataSource | None) -> Programs:
  """The programs of `config` over `mesh`.

  Args:
    config: a validated run config.
    mesh: the device mesh (the target's devices for an ahead-of-time compile).
    data: where the split sizes of the schedule come from; None for a run that only
      evaluates (its schedule is never used).

  Returns:
    The programs, not yet lowered.
  """
  task = tasks.for_config(config)
  if data is None:
    epoch_steps = total_steps = None
    group_schedule = lambda multiplier: (lambda step: 0.0)
  else:
    epoch_steps, total_steps = steps_per_epoch(config, data), num_train_steps(config, data)
    group_schedule = functools.partial(optim.create_schedule, config, epoch_steps, total_steps)
  schedule = group_schedule(1.0)
  tx = optim.create_optimizer(config, schedule, group_schedule)
  model = task.create_model(config)
  state, shardings = step_lib.abstract_train_state(config, task, model, tx, mesh)
  return Programs(
      config=config, task=task, model=model, tx=tx, schedule=schedule, mesh=mesh,
      state=state, shardings=shardings,
      train_step=step_lib.make_train_step(config, task, model, tx, schedule, mesh, shardings),
      eval_step=step_lib.make_eval_step(config, task, model, mesh, shardings.variables()),
      steps_per_epoch=epoch_steps, total_steps=total_steps)
