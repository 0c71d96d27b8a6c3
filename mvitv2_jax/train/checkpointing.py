"""Orbax checkpoints: train states, the best params by an eval metric, standalone params.

The only module that imports orbax. Layout under a run's workdir:
  checkpoints/<step>/  the latest `keep` train states (params, opt_state, rng, step, and
                       `model_state` for a model with collections such as BatchNorm's, `ema`
                       for a run that keeps a moving average of its variables).
  best/<step>/         the weights of the best evaluation by the task's metric (e.g. the
                       highest top-1; the average's, by its own metric, where the run keeps
                       one): the params, or the variables dict of a model with
                       collections; `restore_params` (and so `init_from`) reads it.
  corrupt/             checkpoints that failed their integrity record, moved aside.
Every step directory ends with an integrity record (`integrity.json`: each file's size
and SHA-256, and for best/ the metric). A directory that fails its record is never
restored: the newest one that verifies is used instead. One that orbax finished but that
has no record (an older version's) is used unverified, with a warning. On several processes, only
process 0 reads or changes the directories and broadcasts what it found.
"""

import logging
import os
import shutil
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from mvitv2_jax.train import integrity
from mvitv2_jax.train.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = 'checkpoints'
BEST_DIR = 'best'
CORRUPT_DIR = 'corrupt'
# Directories renamed to this are being deleted; a crash can leave one behind.
_DELETING_SUFFIX = '.deleting'


def broadcast(value: int) -> int:
  """Process 0's `value` on every process."""
  if jax.process_count() == 1:
    return value
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def _step_dirs(directory: str) -> list[int]:
  """Steps with a directory under `directory`, ascending."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory)
                if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def _remove_unfinished(directory: str):
  """Deletes what a killed save or delete left: orbax's tmp dirs, our `.deleting`."""
  if not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    if ocp.path.atomicity_types.TMP_DIR_SUFFIX in name or name.endswith(_DELETING_SUFFIX):
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _delete(path: str):
  """Removes a step directory; a crash midway leaves a name no listing takes for a step."""
  doomed = path + _DELETING_SUFFIX
  os.rename(path, doomed)
  shutil.rmtree(doomed)


class Checkpointer:
  """Saves, verifies and restores the train states and the best params of a run.

  Saves are synchronous: the integrity record can only be written once orbax has
  committed every file.
  """

  def __init__(self, workdir: str, keep: int, best_metric: str = 'top1',
               higher_is_better: bool = True):
    """Opens the run's checkpoint directories and finds the best evaluation so far.

    Args:
      workdir: the run directory.
      keep: how many recent train states to keep (>= 1).
      best_metric: the eval metric that selects best/ (recorded with it).
      higher_is_better: the metric's direction.
    """
    workdir = os.path.abspath(workdir)
    self._workdir = workdir
    self._states_dir = os.path.join(workdir, CHECKPOINTS_DIR)
    self._best_dir = os.path.join(workdir, BEST_DIR)
    self._keep = keep
    self._primary = jax.process_index() == 0
    self._ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    self._good = set()  # Train-state steps verified or saved by this run (process 0).
    self._metric, self._sign = best_metric, 1.0 if higher_is_better else -1.0
    self.best_step, self.best_value = None, None
    if self._primary:
      for directory in (self._states_dir, self._best_dir):
        _remove_unfinished(directory)
      self._find_best()

  # -- Integrity ------------------------------------------------------------

  def _quarantine(self, path: str, reason: str, label: str = 'corrupt'):
    """Moves a checkpoint to `corrupt/`, out of every listing, saying why."""
    kind, step = os.path.split(os.path.relpath(path, self._workdir))
    target = os.path.join(self._workdir, CORRUPT_DIR, f'{kind}-{step}')
    n = 1
    while os.path.exists(target if n == 1 else f'{target}.{n}'):
      n += 1
    target = target if n == 1 else f'{target}.{n}'
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.rename(path, target)
    log.warning('Skipping the %s checkpoint %s: %s. Moved to %s.', label,
                os.path.relpath(path, self._workdir), reason, target)

  def _verified(self, path: str) -> dict[str, Any] | None:
    """The record's metadata if `path` verifies, else None (and `path` moved aside).

    A checkpoint that orbax finished but that has no record (saved before records
    existed, or stopped between the save and its record) is used unverified.
    """
    if (not os.path.exists(os.path.join(path, integrity.RECORD_FILE))
        and os.path.exists(os.path.join(path, ocp.path.atomicity_types.COMMIT_SUCCESS_FILE))):
      log.warning('%s has no integrity record (saved by an older version, or stopped before '
                  'its record was written): using it unverified.', path)
      return {}
    try:
      return integrity.verify(path)
    except CheckpointError as e:
      self._quarantine(path, str(e))
      return None

  def _find_best(self):
    """Sets `best_step`/`best_value` from best/; drops worse or corrupt leftovers."""
    candidates = []
    for step in _step_dirs(self._best_dir):
      path = os.path.join(self._best_dir, str(step))
      metadata = self._verified(path)
      if metadata is None:
        continue
      if not metadata:  # Unrecorded: its value is unknown, so any evaluation beats it.
        candidates.append((float('-inf'), -step, step, None))
        continue
      value = metadata.get(self._metric)
      if not isinstance(value, (int, float)):
        self._quarantine(path, f'its record has no {self._metric}: {metadata}')
        continue
      candidates.append((self._sign * float(value), -step, step, float(value)))
    if not candidates:
      return
    # A crash between writing a new best and deleting the old one leaves two.
    candidates.sort(reverse=True)
    _, _, self.best_step, self.best_value = candidates[0]
    for _, _, step, _ in candidates[1:]:
      _delete(os.path.join(self._best_dir, str(step)))

  # -- Train states ----------------------------------------------------------

  def newest_good_step(self, below: int | None = None) -> int | None:
    """The newest train state (under `below`) that verifies; process 0 only.

    Those newer that do not verify are moved aside. Each directory is hashed at
    most once per run: what verified or was saved here is known to be good.
    """
    for step in reversed(_step_dirs(self._states_dir)):
      if below is not None and step >= below:
        continue
      if step in self._good or self._verified(
          os.path.join(self._states_dir, str(step))) is not None:
        self._good.add(step)
        return step
    return None

  def latest_step(self) -> int | None:
    """`newest_good_step()` of process 0, on every process."""
    found = self.newest_good_step() if self._primary else None
    found = broadcast(-1 if found is None else found)
    return None if found < 0 else found

  def quarantine_diverged(self, step: int, reason: str):
    """Moves the train state of `step` aside (process 0): training from it diverged."""
    self._quarantine(os.path.join(self._states_dir, str(step)), reason, 'diverged')
    self._good.discard(step)

  def saved_steps(self) -> list[int]:
    """Steps with a train-state directory, ascending (process 0; verified or not)."""
    return _step_dirs(self._states_dir)

  def save(self, step: int, state: Any):
    """Writes a train state, its integrity record, then drops states beyond `keep`."""
    path = os.path.join(self._states_dir, str(step))
    self._ckptr.save(path, args=ocp.args.StandardSave(state), force=True)
    if self._primary:
      integrity.write_record(path, {'step': step})
      self._good.add(step)
      for old in _step_dirs(self._states_dir)[:-self._keep]:
        _delete(os.path.join(self._states_dir, str(old)))
        self._good.discard(old)

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores a train state onto the shardings carried by `abstract_state`.

    Args:
      step: a step `latest_step` returned.
      abstract_state: pytree of `jax.ShapeDtypeStruct` with `sharding` set.

    Returns:
      The train state, placed as `abstract_state` says.

    Raises:
      CheckpointError: orbax could not read it (one line).
    """
    path = os.path.join(self._states_dir, str(step))
    try:
      return self._ckptr.restore(path, args=ocp.args.StandardRestore(abstract_state))
    except (ValueError, KeyError, TypeError, OSError) as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointError(f'{path} does not restore: {first_line}') from e

  # -- Best params -------------------------------------------------------------

  def save_best(self, step: int, params: Any, value: float):
    """Keeps `params` if `value` beats every earlier evaluation of the run, restarts included.

    Args:
      step: the step evaluated.
      params: its weights (`weights_of`: the params, or the variables dict).
      value: its eval metric (`best_metric`).
    """
    better = broadcast(int(self.best_value is None
                           or self._sign * value > self._sign * self.best_value))
    if not better:
      return
    path = os.path.join(self._best_dir, str(step))
    self._ckptr.save(path, args=ocp.args.StandardSave(params), force=True)
    if self._primary:
      integrity.write_record(path, {'step': step, self._metric: float(value)})
      if self.best_step is not None and self.best_step != step:
        _delete(os.path.join(self._best_dir, str(self.best_step)))
    self.best_step, self.best_value = step, float(value)

  def close(self):
    self._ckptr.close()


def save_params(path: str, params: Any):
  """Writes a params pytree as a standalone checkpoint (`path` must not exist)."""
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.abspath(path), params)


def restore_params(path: str) -> Any:
  """Reads params written by `save_params`, a run's `best/<step>`, or its `checkpoints/<step>`.

  Args:
    path: the checkpoint directory (of a train state, its weights are returned: the
      params, or with collections the variables dict). One with an integrity record is
      verified first.

  Returns:
    The params pytree (or variables dict) as NumPy arrays (host memory, no device
    placement).

  Raises:
    CheckpointError: the directory fails its integrity record.
  """
  path = os.path.abspath(path)
  if os.path.isfile(os.path.join(path, integrity.RECORD_FILE)):
    integrity.verify(path)
  # CheckpointManager puts its single item in a 'default' subdirectory.
  if os.path.isdir(os.path.join(path, 'default')):
    path = os.path.join(path, 'default')
  with ocp.PyTreeCheckpointer() as ckptr:
    tree = ckptr.metadata(path).item_metadata.tree
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = ckptr.restore(path, restore_args=restore_args)
  # A train state (TrainState's fields, StatefulTrainState's): its weights, not the average.
  if {'step', 'params', 'opt_state', 'rng'} <= set(restored):
    return weights_of({'params': restored['params'], **(restored.get('model_state') or {})})
  return restored


def weights_of(variables: dict[str, Any]) -> Any:
  """What best/ keeps and `convert.load_params` returns: the params alone for a model that
  has no other collections (MViT), else the variables dict."""
  return variables['params'] if len(variables) == 1 else variables
