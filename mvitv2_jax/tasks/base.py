"""What the train loop asks of a task: its config fields, batches, loss, evaluation and logs.

The loop (`mvitv2_jax.train`) knows nothing of labels, boxes or metrics: it compiles
`loss` and `eval_outputs` into its jitted steps, feeds batches shaped as `batch_spec`
says from the task's data source, folds eval outputs with the task's `Evaluator`, keeps
`best/` by `best_metric`, and calls a run diverged past `divergence_bound`.
"""

import abc
from typing import Any, Iterator, Mapping, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mvitv2_jax import config_fields

Batch = dict[str, Any]
Config = ml_collections.ConfigDict


class DataSource(Protocol):
  """Where a task's batches come from (a module or an object)."""

  def num_examples(self, config: Config, split: str) -> int:
    """Examples of `split` as the loop counts them (a train step takes batch_size of them)."""

  def create_train_iterator(self, config: Config, *, start_step: int = 0) -> Iterator[Batch]:
    """Endless host batches of this process, resumed after `start_step` batches."""

  def create_eval_iterator(self, config: Config) -> Iterator[Batch]:
    """One pass over the eval split for this process, padded, with a `mask`."""


class Evaluator(abc.ABC):
  """Folds the eval step's outputs over one pass and gives the metrics."""

  @abc.abstractmethod
  def add(self, outputs: Any) -> None:
    """Takes one eval batch's outputs (device arrays; fetching them syncs)."""

  @abc.abstractmethod
  def result(self) -> dict[str, float]:
    """The metrics of the pass, with `count`: the examples evaluated."""


class SumEvaluator(Evaluator):
  """Sums dicts of device scalars without syncing; `result` fetches the sums."""

  def __init__(self):
    self._sums = None

  def add(self, outputs: Mapping[str, jax.Array]) -> None:
    if self._sums is None:
      self._sums = dict(outputs)
    else:
      self._sums = jax.tree.map(jnp.add, self._sums, dict(outputs))

  def result(self) -> dict[str, float]:
    if self._sums is None:
      return {}
    return {k: float(v) for k, v in jax.device_get(self._sums).items()}


class Task(abc.ABC):
  """A task the trainer runs; subclasses are stateless, one instance per task."""

  name: str
  best_metric: str  # The eval metric that selects `best/`.
  higher_is_better: bool = True

  @abc.abstractmethod
  def config_checks(self, config: Config) -> dict[str, config_fields.Check]:
    """The task's config fields (dotted) and their checks."""

  def check_config(self, config: Config) -> str | None:
    """What is wrong with the task's fields together (they each passed their check), or None."""
    del config
    return None

  @abc.abstractmethod
  def create_model(self, config: Config) -> nn.Module:
    """The model the config names, built as the task trains it."""

  @abc.abstractmethod
  def data_source(self, config: Config) -> DataSource:
    """The source of the config's batches."""

  @abc.abstractmethod
  def batch_spec(self, config: Config, model: nn.Module, batch_size: int, *,
                 train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of a global batch of `batch_size` as the data source yields it (eval: `mask`)."""

  @abc.abstractmethod
  def init_inputs(self, model: nn.Module) -> tuple[Any, ...]:
    """Positional inputs for `model.init`."""

  def prepare_batch(self, rng: jax.Array, batch: Batch, config: Config) -> Batch:
    """The whole global batch before it is split into micro-batches (e.g. mixup)."""
    del rng, config
    return batch

  @abc.abstractmethod
  def loss(self, model: nn.Module, variables: dict[str, Any], batch: Batch, rng: jax.Array,
           config: Config) -> tuple[jax.Array, dict[str, jax.Array], dict[str, Any]]:
    """A (micro-)batch in train mode: its mean loss, scalar metrics to log, and the model's
    collections besides 'params' in `variables` as the batch updated them (e.g.
    BatchNorm's running statistics; `{}` for a model with params only)."""

  @abc.abstractmethod
  def eval_outputs(self, model: nn.Module, variables: dict[str, Any], batch: Batch,
                   config: Config) -> Any:
    """What one eval batch contributes (masked examples contribute nothing); `variables`
    are the params and collections `model.apply` takes."""

  @abc.abstractmethod
  def evaluator(self, config: Config) -> Evaluator:
    """A fresh evaluator for one pass."""

  @abc.abstractmethod
  def divergence_bound(self, config: Config) -> float:
    """A train loss above this means the params have diverged."""

  @abc.abstractmethod
  def format_train(self, means: Mapping[str, float]) -> str:
    """The task's part of a train log line (its `loss` aux metrics)."""

  @abc.abstractmethod
  def format_eval(self, results: Mapping[str, float]) -> str:
    """An eval log line's metrics."""
