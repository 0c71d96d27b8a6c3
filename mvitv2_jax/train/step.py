"""The train state, the jitted train and eval steps, and the model a config names."""

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

from mvitv2_jax import model as mvit
from mvitv2_jax.data import mixup
from mvitv2_jax.train import metrics
from mvitv2_jax.train import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 []: updates done so far.
  params: Any
  opt_state: Any
  rng: jax.Array  # Base key; each step folds its step number in.


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The model named by `config.model`, built for `config.image_size`."""
  return mvit.create_model(
      config.model, num_classes=config.num_classes,
      image_size=config.image_size, drop_path_rate=config.drop_path_rate,
      dtype=config.dtype, **config.model_overrides.to_dict())


def _state_init_fn(config, model, tx):
  """`rng -> TrainState` at step 0."""

  def init(rng):
    params_rng, base_rng = jax.random.split(rng)
    images = jnp.zeros((1, *model.cfg.input_size, 3))
    params = model.init({'params': params_rng}, images, train=False)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=base_rng)

  return init


def abstract_train_state(
    config: ml_collections.ConfigDict, model: nn.Module,
    tx: optax.GradientTransformation, mesh: jax.sharding.Mesh
) -> tuple[TrainState, Any]:
  """Shape structs of the train state, carrying their target shardings.

  Args:
    config: the run config (`seed`, `image_size`, `shard_params`).
    model: the Flax module.
    tx: the optimizer.
    mesh: the device mesh.

  Returns:
    The abstract state (what a restore needs) and its shardings.
  """
  shapes = jax.eval_shape(_state_init_fn(config, model, tx),
                          jax.random.PRNGKey(config.seed))
  shardings = sharding.state_shardings(shapes, mesh, config.shard_params)
  return _abstract(shapes, shardings), shardings


def create_train_state(
    config: ml_collections.ConfigDict, model: nn.Module,
    tx: optax.GradientTransformation, mesh: jax.sharding.Mesh
) -> tuple[TrainState, Any]:
  """The state at step 0, initialised directly in its shardings, and those shardings.

  Arguments as for `abstract_train_state`.
  """
  _, shardings = abstract_train_state(config, model, tx, mesh)
  init = jax.jit(_state_init_fn(config, model, tx), out_shardings=shardings)
  return init(jax.random.PRNGKey(config.seed)), shardings


def _split_micro_batches(x: jax.Array, k: int,
                         mesh: jax.sharding.Mesh) -> jax.Array:
  """`[B, ...]` -> `[k, B/k, ...]`; each micro-batch spans every device."""
  # Row i goes to micro-batch i % k, so every device's rows are spread over
  # all micro-batches and no data moves between devices.
  x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
  return jax.lax.with_sharding_constraint(
      x, NamedSharding(mesh, P(None, sharding.DATA_AXIS)))


def train_step(state: TrainState, batch: dict[str, jax.Array], *,
               model: nn.Module, tx: optax.GradientTransformation,
               schedule: optax.Schedule, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh) -> tuple[TrainState, dict[str, Any]]:
  """One AdamW update on a global batch (mixup, drop path, clipping).

  Args:
    state: the train state.
    batch: `image` float `[B, S, S, 3]` (videos `[B, T, S, S, 3]`), `label` int32 `[B]`,
      sharded on 'data'.
    model: the Flax module.
    tx: the optimizer.
    schedule: the learning-rate schedule (for the metrics).
    config: the run config (`aug.*`, `num_classes`, `optim.grad_accum_steps`).
    mesh: the device mesh.

  Returns:
    The new state and scalars `loss`, `accuracy`, `lr`, `grad_norm`.
  """
  mix_rng, drop_rng = jax.random.split(
      jax.random.fold_in(state.rng, state.step))
  a = config.aug
  images, targets = mixup.mix_batch(
      mix_rng, batch['image'], batch['label'], config.num_classes,
      mixup_alpha=a.mixup_alpha, cutmix_alpha=a.cutmix_alpha,
      mixup_prob=a.mixup_prob, cutmix_switch_prob=a.cutmix_switch_prob,
      label_smoothing=a.label_smoothing)

  def loss_fn(params, images, targets, labels, rng):
    logits = model.apply({'params': params}, images, train=True,
                         rngs={'dropout': rng})
    loss = jnp.mean(metrics.cross_entropy(logits, targets))
    return loss, jnp.mean(metrics.topk_correct(logits, labels, 1))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  k = config.optim.grad_accum_steps
  if k == 1:
    (loss, accuracy), grads = grad_fn(
        state.params, images, targets, batch['label'], drop_rng)
  else:
    # Mixup saw the whole batch above; micro-batches only split the compute.
    micro = jax.tree.map(lambda x: _split_micro_batches(x, k, mesh),
                         (images, targets, batch['label']))

    def accumulate(carry, xs):
      i, (images, targets, labels) = xs
      (loss, accuracy), grads = grad_fn(
          state.params, images, targets, labels,
          jax.random.fold_in(drop_rng, i))
      return jax.tree.map(jnp.add, carry, (loss, accuracy, grads)), None

    zeros = (jnp.zeros(()), jnp.zeros(()),
             jax.tree.map(jnp.zeros_like, state.params))
    sums, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(k), micro))
    loss, accuracy, grads = jax.tree.map(lambda s: s / k, sums)

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
      step=state.step + 1, params=optax.apply_updates(state.params, updates),
      opt_state=opt_state)
  return new_state, {
      'loss': loss, 'accuracy': accuracy, 'lr': schedule(state.step),
      'grad_norm': optax.tree.norm(grads)}


def eval_step(params: Any, batch: dict[str, jax.Array], *,
              model: nn.Module) -> dict[str, jax.Array]:
  """Sums of loss, top-1, top-5 and count over the unmasked examples.

  `batch['image']` holds one input per example, or several views of it (`[B, V, ...]`,
  e.g. the test clips and crops of a video): an example with views is scored by its
  softmax averaged over them.
  """
  images = batch['image']
  apply = lambda x: model.apply({'params': params}, x, train=False)
  if images.ndim == len(model.cfg.input_size) + 2:
    logits = apply(images)
  else:
    # One view of every example at a time: memory as for a batch without views.
    probs = jax.lax.map(lambda x: jax.nn.softmax(apply(x)), jnp.swapaxes(images, 0, 1))
    # Log-probabilities are logits whose softmax is the averaged softmax.
    logits = jnp.log(jnp.maximum(jnp.mean(probs, axis=0), jnp.finfo(jnp.float32).tiny))
  return metrics.eval_sums(logits, batch['label'], batch['mask'])


def make_train_step(config, model, tx, schedule, mesh, state_shardings):
  """`train_step` jitted once, the state donated and kept in its shardings.

  Args:
    config: the run config.
    model: the Flax module.
    tx: the optimizer.
    schedule: the learning-rate schedule.
    mesh: the device mesh.
    state_shardings: the `TrainState` pytree of shardings.

  Returns:
    `(state, batch) -> (state, metrics)`.
  """
  step = functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                           config=config, mesh=mesh)
  return jax.jit(
      step, in_shardings=(state_shardings, sharding.data_sharding(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=(0,))


def make_eval_step(model, mesh, params_shardings):
  """`eval_step` jitted once.

  Args:
    model: the Flax module.
    mesh: the device mesh.
    params_shardings: the params pytree of shardings.

  Returns:
    `(params, batch) -> sums` (see `eval_step`).
  """
  return jax.jit(
      functools.partial(eval_step, model=model),
      in_shardings=(params_shardings, sharding.data_sharding(mesh)),
      out_shardings=sharding.replicated(mesh))


def _abstract(tree: Any, shardings: Any) -> Any:
  """Shape structs carrying the target shardings, for restoring."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)


