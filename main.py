"""Trains, fine-tunes or evaluates MViTv2 on ImageNet-1K.

  python main.py --config=configs/mvitv2_s.py --workdir=runs/mvitv2_s
  python main.py --config=configs/demo.py                # CPU, a few minutes
  python main.py --config=configs/mvitv2_b.py --config.mode=eval \\
      --config.init_from=/ckpt/mvitv2_b_converted

Any config field can be overridden as `--config.<field>=<value>`. The workdir
defaults to `./runs/<config file name>`; a run restarted with the same workdir
resumes from its latest checkpoint.

Several hosts: start one process per host with `--multiprocess` (or set the
environment variable MVITV2_MULTIPROCESS=1). `jax.distributed.initialize()`
then finds the coordinator on Cloud TPU, SLURM, Open MPI and similar clusters;
elsewhere give --coordinator_address, --num_processes and --process_id (or
JAX_COORDINATOR_ADDRESS etc.).

Exit status: 0 finished; 1 the run failed; 2 bad command line or config (nothing
was written); 130 / 143 stopped by SIGINT / SIGTERM after saving a checkpoint.
Failures print one `error:` line.
"""

import logging
import os
import signal
import sys

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import tensorflow as tf

from mvitv2_jax import convert
from mvitv2_jax import train
from mvitv2_jax.data import tfds_access
from mvitv2_jax.data import unreadable
from mvitv2_jax.train import errors

# Unknown fields are let through the flag parser so that `train` refuses them with a
# one-line message, and so that model_overrides (empty by default) can be given.
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Training configuration file.', lock_config=False,
    accept_new_attributes=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Checkpoints, logs and TensorBoard files; default '
    './runs/<config file name>.')
_MULTIPROCESS = flags.DEFINE_bool(
    'multiprocess', os.environ.get('MVITV2_MULTIPROCESS', '0') == '1',
    'Call jax.distributed.initialize() (one process per host).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 (multiprocess).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Number of processes (multiprocess).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process (multiprocess).')
_REUSE_HOST_MEMORY = flags.DEFINE_bool(
    'reuse_host_memory', False,
    'Training on the CPU: keep freed step memory mapped for reuse (glibc malloc '
    'settings for the whole process; see tools/host_memory.py).')
flags.mark_flags_as_required(['config'])

log = logging.getLogger('mvitv2_jax')

# Failures that need no traceback: the message says what to change.
_USER_ERRORS = (errors.RunError, convert.ConversionError, convert.CheckpointFormatError,
                tfds_access.DatasetNotPreparedError, unreadable.UnreadableBatchError)


def _one_line(e: BaseException) -> str:
  return ' '.join(str(e).split()) or type(e).__name__


def _fail(message: str, status: int) -> int:
  print(f'error: {message}', file=sys.stderr, flush=True)
  return status


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every parse error as one line (config_flags raises many kinds)."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    sys.exit(_fail(_one_line(e), errors.EXIT_USAGE))


def _config() -> ml_collections.ConfigDict:
  """The parsed config, or `ConfigError` if its file did not load."""
  config = _CONFIG.value
  if isinstance(config, ml_collections.ConfigDict):
    return config
  path = config_flags.get_config_filename(flags.FLAGS['config'])
  if not os.path.isfile(path):
    raise errors.ConfigError(f'config file {path}: no such file')
  try:
    config.model  # config_flags defers a load failure to the first field read.
  except IOError as e:
    raise errors.ConfigError(f'config file {path}: {_one_line(e)}') from None
  raise errors.ConfigError(f'config file {path}: get_config() must return a ConfigDict')


def _run(config: ml_collections.ConfigDict):
  if _MULTIPROCESS.value:
    try:
      jax.distributed.initialize(
          coordinator_address=_COORDINATOR.value,
          num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
    except (RuntimeError, ValueError) as e:  # XLA's errors are RuntimeErrors.
      raise errors.RunError(f'could not join the distributed run: {_one_line(e)}') from None
  workdir = _WORKDIR.value
  if workdir is None:
    name = os.path.splitext(os.path.basename(
        config_flags.get_config_filename(flags.FLAGS['config'])))[0]
    workdir = os.path.join('runs', name)
  log.info('JAX process %d/%d, local devices: %s', jax.process_index(),
           jax.process_count(), jax.local_devices())
  log.info('Workdir: %s', os.path.abspath(workdir))
  train.train_and_evaluate(config, workdir)


def main(argv) -> int:
  if len(argv) > 1:
    return _fail(f'unexpected arguments: {" ".join(argv[1:])}', errors.EXIT_USAGE)
  if _REUSE_HOST_MEMORY.value:
    from tools import host_memory  # pylint: disable=g-import-not-at-top
    # Before JAX runs anything: threads that allocated already keep their arenas.
    if host_memory.runs_on_cpu():
      host_memory.reuse_freed_memory()
  log.setLevel(logging.INFO)
  # orbax and tfds log through absl at INFO on every save and dataset load.
  logging.getLogger('absl').setLevel(logging.WARNING)
  # Hide accelerators from TensorFlow: it would otherwise reserve their memory.
  tf.config.experimental.set_visible_devices([], 'GPU')
  tf.config.experimental.set_visible_devices([], 'TPU')
  try:
    _run(_config())
  except errors.Interrupted as e:
    log.warning('%s', e)
    return e.exit_status
  except _USER_ERRORS as e:
    return _fail(_one_line(e), getattr(e, 'exit_status', errors.EXIT_ERROR))
  except KeyboardInterrupt:
    return _fail('interrupted before training started; nothing was saved',
                 128 + signal.SIGINT)
  return 0


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
