"""A run's workdir: one trainer at a time, and the config the run was started with.

`WorkdirLock` holds `WORKDIR/trainer.lock` (an flock, so the kernel releases it when the
holder dies, even by kill -9) and records who holds it. `check_config` refuses a config
that disagrees with the workdir's `config.json` on a field that shapes the run;
`write_config` replaces `config.json` atomically.
"""

import datetime
import fcntl
import json
import os
import socket
import sys

import ml_collections

from mvitv2_jax import config_fields
from mvitv2_jax.train.errors import ConfigMismatchError, WorkdirBusyError

LOCK_FILE = 'trainer.lock'
CONFIG_FILE = 'config.json'

# Fields a resumed run may change: they do not shape the train state or its trajectory
# up to the checkpoint (a changed num_train_steps moves the cosine from there on).
RESUMABLE_CHANGES = frozenset({
    'mode', 'num_train_steps', 'num_epochs', 'log_every_steps', 'eval_every_steps',
    'checkpoint_every_steps', 'keep_checkpoints', 'eval_batch_size', 'eval_split',
    'eval_crop_pct', 'num_eval_examples', 'data_dir', 'init_from', 'init_drop_head',
    'shard_params',
})
# Fields newer than some workdirs: absent from their config.json means this value.
ADDED_FIELDS = {'optim.ema_decay': 0.0}


class WorkdirLock:
  """An exclusive lock on a workdir for the life of this process (or until `release`)."""

  def __init__(self, workdir: str):
    """Takes the lock or raises `WorkdirBusyError` naming the holder.

    Args:
      workdir: the run directory (created if missing).
    """
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(self._fd, 4096, 0).decode(errors='replace').strip()
      os.close(self._fd)
      raise WorkdirBusyError(
          f'{workdir} is in use by another trainer ({holder or "starting up"}); '
          f'wait for it to finish, stop it, or use another --workdir') from None
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    holder = f'pid {os.getpid()} on {socket.gethostname()} since {started}: {" ".join(sys.argv)}'
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, holder.encode() + b'\n', 0)

  def release(self):
    """Gives the lock up; the file stays (removing it would race a new holder)."""
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None


def _as_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True)


def check_config(config: ml_collections.ConfigDict, workdir: str):
  """Refuses `config` if the workdir's `config.json` differs on a field that matters.

  Args:
    config: the validated config of this run.
    workdir: a run directory that has checkpoints (its config.json describes them).

  Raises:
    ConfigMismatchError: names each differing field with both values.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path) as f:
      saved = config_fields.flatten(json.load(f))
  except FileNotFoundError:
    return  # A workdir of an older trainer: nothing to compare with.
  except (OSError, ValueError) as e:
    raise ConfigMismatchError(f'{path} is unreadable ({e}); cannot tell which run the '
                              f'checkpoints in {workdir} belong to') from None
  current = config_fields.flatten(json.loads(_as_json(config)))
  saved = {**ADDED_FIELDS, **saved}
  differs = [f'{k} {saved.get(k, "(unset)")!r} -> {current.get(k, "(unset)")!r}'
             for k in sorted(set(saved) | set(current))
             if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)]
  if differs:
    raise ConfigMismatchError(
        f'{workdir} holds a run with another config ({path}): {"; ".join(differs)}. '
        f'Resume with the same values or use another --workdir')


def write_config(config: ml_collections.ConfigDict, workdir: str):
  """Writes `WORKDIR/config.json`; a crash leaves the old file or the new one, whole."""
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(_as_json(config))
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
