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
"""

import logging
import os

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import tensorflow as tf

from mvitv2_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Training configuration file.', lock_config=True)
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
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
  if _MULTIPROCESS.value:
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)

  workdir = _WORKDIR.value
  if workdir is None:
    name = os.path.splitext(os.path.basename(
        config_flags.get_config_filename(flags.FLAGS['config'])))[0]
    workdir = os.path.join('runs', name)
  log.info('JAX process %d/%d, local devices: %s', jax.process_index(),
           jax.process_count(), jax.local_devices())
  log.info('Workdir: %s', os.path.abspath(workdir))
  train.train_and_evaluate(_CONFIG.value, workdir)


if __name__ == '__main__':
  app.run(main)
