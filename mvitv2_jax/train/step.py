"""The train state and the jitted train and eval steps of any task.

A model with variable collections besides its params (BatchNorm's `batch_stats`) has them
in the state, updated by every train step; under `jit` its batch statistics are those of
the global batch, over every device (docs/training.md).
"""

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import optax

from mvitv2_jax import models
from mvitv2_jax import tasks
from mvitv2_jax.train import sharding


@flax.struct.dataclass
class TrainState:
  """The state of a model whose only variables are its params."""
  step: jax.Array  # int32 []: updates done so far.
  params: Any
  opt_state: Any
  rng: jax.Array  # Base key; each step folds its step number in.

  def collections(self) -> dict[str, Any]:
    """The model's variable collections besides 'params', by name."""
    return {}

  def variables(self) -> dict[str, Any]:
    """What `model.apply` takes: `{'params': ..., **collections}`."""
    return {'params': self.params, **self.collections()}

  def with_variables(self, variables: dict[str, Any]) -> 'TrainState':
    """This state with the model's variables (as `variables()` gives them) replaced."""
    return self.replace(params=variables['params'])

  def averaged_variables(self) -> dict[str, Any] | None:
    """The moving average of `variables()` the run keeps, None when it keeps none."""
    return None

  def restart_average(self) -> 'TrainState':
    """This state with its moving average, if it keeps one, set to its variables."""
    return self


@flax.struct.dataclass
class StatefulTrainState(TrainState):
  """The state of a run that keeps more than params: the model's collections (BatchNorm's)
  and/or the variables' exponential moving average (`config.optim.ema_decay` > 0).

  A subclass, not fields of `TrainState`: the checkpoints of MViT runs without an average
  keep TrainState's four fields, so that older ones restore.
  """
  model_state: Any  # Collection name -> its tree, e.g. {'batch_stats': ...}; {} for none.
  ema: Any = None  # The moving average of `variables()`, None when the run keeps none.

  def collections(self) -> dict[str, Any]:
    return dict(self.model_state)

  def with_variables(self, variables: dict[str, Any]) -> 'StatefulTrainState':
    return self.replace(params=variables['params'],
                        model_state={k: v for k, v in variables.items() if k != 'params'})

  def averaged_variables(self) -> dict[str, Any] | None:
    return self.ema

  def restart_average(self) -> 'StatefulTrainState':
    if self.ema is None:
      return self
    # A copy: the train step donates both.
    return self.replace(ema=jax.tree.map(jnp.copy, self.variables()))


def _state_init_fn(task: tasks.Task, model: nn.Module, tx: optax.GradientTransformation,
                   ema_decay: float):
  """`rng -> TrainState` at step 0 (a `StatefulTrainState` for a family with collections or
  a run that averages the variables; the average starts as the initial variables)."""

  def init(rng):
    params_rng, base_rng = jax.random.split(rng)
    variables = model.init({'params': params_rng}, *task.init_inputs(model), train=False)
    params = variables['params']
    state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                 rng=base_rng)
    collections = {name: variables[name] for name in models.family_of(model).state_collections}
    if not collections and not ema_decay:
      return TrainState(**state)
    ema = {'params': params, **collections} if ema_decay else None
    return StatefulTrainState(**state, model_state=collections, ema=ema)

  return init


def abstract_train_state(
    config: ml_collections.ConfigDict, task: tasks.Task, model: nn.Module,
    tx: optax.GradientTransformation, mesh: jax.sharding.Mesh
) -> tuple[TrainState, Any]:
  """Shape structs of the train state, carrying their target shardings.

  Args:
    config: the run config (`seed`, `shard_params`).
    task: the task (the model's init inputs).
    model: the Flax module.
    tx: the optimizer.
    mesh: the device mesh.

  Returns:
    The abstract state (what a restore needs) and its shardings.
  """
  shapes = jax.eval_shape(_state_init_fn(task, model, tx, config.optim.ema_decay),
                          jax.random.PRNGKey(config.seed))
  shardings = sharding.state_shardings(shapes, mesh, config.shard_params,
                                       models.family_of(model))
  return _abstract(shapes, shardings), shardings


def create_train_state(
    config: ml_collections.ConfigDict, task: tasks.Task, model: nn.Module,
    tx: optax.GradientTransformation, mesh: jax.sharding.Mesh
) -> tuple[TrainState, Any]:
  """The state at step 0, initialised directly in its shardings, and those shardings.

  Arguments as for `abstract_train_state`.
  """
  _, shardings = abstract_train_state(config, task, model, tx, mesh)
  init = jax.jit(_state_init_fn(task, model, tx, config.optim.ema_decay),
                 out_shardings=shardings)
  return init(jax.random.PRNGKey(config.seed)), shardings


def _split_micro_batches(x: jax.Array, k: int,
                         mesh: jax.sharding.Mesh) -> jax.Array:
  """`[B, ...]` -> `[k, B/k, ...]`; each micro-batch spans every device."""
  # Row i goes to micro-batch i % k, so every device's rows are spread over
  # all micro-batches and no data moves between devices.
  x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
  return jax.lax.with_sharding_constraint(
      x, NamedSharding(mesh, P(None, sharding.DATA_AXIS)))


def train_step(state: TrainState, batch: dict[str, jax.Array], *, task: tasks.Task,
               model: nn.Module, tx: optax.GradientTransformation,
               schedule: optax.Schedule, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh) -> tuple[TrainState, dict[str, Any]]:
  """One optimizer update on a global batch, micro-batched if configured.

  Args:
    state: the train state.
    batch: a global batch as the task's data source yields it, sharded on 'data'.
    task: the task (batch preparation and loss).
    model: the Flax module.
    tx: the optimizer.
    schedule: the learning-rate schedule (for the metrics).
    config: the run config (the task's fields, `optim.grad_accum_steps`).
    mesh: the device mesh.

  Returns:
    The new state (its collections, e.g. batch statistics, updated by each micro-batch in
    turn; its moving average, if kept, after the update, as timm's `ModelEma` does) and
    scalars `loss`, the task's metrics, `lr`, `grad_norm`.
  """
  prepare_rng, loss_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
  # The whole batch is prepared (e.g. mixed) before it is split into micro-batches.
  batch = task.prepare_batch(prepare_rng, batch, config)

  def loss_fn(params, collections, batch, rng):
    loss, aux, collections = task.loss(model, {'params': params, **collections}, batch, rng,
                                       config)
    return loss, (aux, collections)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  k = config.optim.grad_accum_steps
  if k == 1:
    (loss, (aux, collections)), grads = grad_fn(state.params, state.collections(), batch,
                                                loss_rng)
  else:
    micro = jax.tree.map(lambda x: _split_micro_batches(x, k, mesh), batch)

    def accumulate(carry, xs):
      collections, sums = carry
      i, micro_batch = xs
      (loss, (aux, collections)), grads = grad_fn(
          state.params, collections, micro_batch, jax.random.fold_in(loss_rng, i))
      return (collections, jax.tree.map(jnp.add, sums, (loss, aux, grads))), None

    (loss_shape, (aux_shape, _)), _ = jax.eval_shape(
        grad_fn, state.params, state.collections(), jax.tree.map(lambda x: x[0], micro),
        loss_rng)
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                         (loss_shape, aux_shape, state.params))
    (collections, sums), _ = jax.lax.scan(accumulate, (state.collections(), zeros),
                                          (jnp.arange(k), micro))
    loss, aux, grads = jax.tree.map(lambda s: s / k, sums)

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.with_variables(
      {'params': optax.apply_updates(state.params, updates), **collections}).replace(
          step=state.step + 1, opt_state=opt_state)
  if config.optim.ema_decay:
    decay = config.optim.ema_decay
    new_state = new_state.replace(ema=jax.tree.map(
        lambda average, new: decay * average + (1.0 - decay) * new, state.ema,
        new_state.variables()))
  return new_state, {'loss': loss, **aux, 'lr': schedule(state.step),
                     'grad_norm': optax.tree.norm(grads)}


def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array], *, task: tasks.Task,
              model: nn.Module, config: ml_collections.ConfigDict) -> Any:
  """The task's outputs of one eval batch (padding examples, `mask` False, count nothing).

  `variables` is `TrainState.variables()`: BatchNorm normalises by its running statistics.
  """
  return task.eval_outputs(model, variables, batch, config)


def make_train_step(config, task, model, tx, schedule, mesh, state_shardings):
  """`train_step` jitted once, the state donated and kept in its shardings.

  Args:
    config: the run config.
    task: the task.
    model: the Flax module.
    tx: the optimizer.
    schedule: the learning-rate schedule.
    mesh: the device mesh.
    state_shardings: the `TrainState` pytree of shardings.

  Returns:
    `(state, batch) -> (state, metrics)`.
  """
  step = functools.partial(train_step, task=task, model=model, tx=tx, schedule=schedule,
                           config=config, mesh=mesh)
  return jax.jit(
      step, in_shardings=(state_shardings, sharding.data_sharding(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=(0,))


def make_eval_step(config, task, model, mesh, variables_shardings):
  """`eval_step` jitted once.

  Args:
    config: the run config.
    task: the task.
    model: the Flax module.
    mesh: the device mesh.
    variables_shardings: the shardings of `TrainState.variables()`.

  Returns:
    `(variables, batch) -> outputs` (see `eval_step`).
  """
  return jax.jit(
      functools.partial(eval_step, task=task, model=model, config=config),
      in_shardings=(variables_shardings, sharding.data_sharding(mesh)),
      out_shardings=sharding.replicated(mesh))


def _abstract(tree: Any, shardings: Any) -> Any:
  """Shape structs carrying the target shardings, for restoring."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)
