"""Orbax checkpoints: train states, best-by-top-1 params, standalone params.

The only module that imports orbax. Layout under a run's workdir:
  checkpoints/<step>/  the latest `keep` train states (params, opt_state, rng, step).
  best/<step>/         the params of the evaluation with the highest top-1;
                       `restore_params` (and so `init_from`) reads it directly.
"""

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


class Checkpointer:
  """Saves and restores train states and the best params of a run."""

  def __init__(self, workdir: str, keep: int):
    """Opens (or creates) the managers under `workdir`.

    Args:
      workdir: the run directory.
      keep: how many recent train states to keep.
    """
    workdir = os.path.abspath(workdir)
    self._latest = ocp.CheckpointManager(
        os.path.join(workdir, 'checkpoints'),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.LatestN(n=keep)))
    self._best = ocp.CheckpointManager(
        os.path.join(workdir, 'best'),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.BestN(
                get_metric_fn=lambda m: m['top1'], n=1)))

  def latest_step(self) -> int | None:
    """The step of the newest complete train state, or None."""
    return self._latest.latest_step()

  def save(self, step: int, state: Any):
    """Saves a train state (asynchronously; see `wait_until_finished`)."""
    self._latest.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores a train state onto the shardings carried by `abstract_state`.

    Args:
      step: which checkpoint.
      abstract_state: pytree of `jax.ShapeDtypeStruct` with `sharding` set.

    Returns:
      The train state, placed as `abstract_state` says.
    """
    return self._latest.restore(
        step, args=ocp.args.StandardRestore(abstract_state))

  def save_best(self, step: int, params: Any, top1: float):
    """Keeps `params` if `top1` beats every earlier evaluation."""
    self._best.save(step, args=ocp.args.StandardSave(params),
                    metrics={'top1': float(top1)}, force=True)

  def wait_until_finished(self):
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self):
    self._latest.close()
    self._best.close()



def save_params(path: str, params: Any):
  """Writes a params pytree as a standalone checkpoint (`path` must not exist)."""
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.abspath(path), params)


def restore_params(path: str) -> Any:
  """Reads params written by `save_params`, or a run's `best/<step>` directory.

  Args:
    path: the checkpoint directory.

  Returns:
    The params pytree as NumPy arrays (host memory, no device placement).
  """
  path = os.path.abspath(path)
  # CheckpointManager puts its single item in a 'default' subdirectory.
  if os.path.isdir(os.path.join(path, 'default')):
    path = os.path.join(path, 'default')
  with ocp.PyTreeCheckpointer() as ckptr:
    tree = ckptr.metadata(path).item_metadata.tree
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ckptr.restore(path, restore_args=restore_args)
