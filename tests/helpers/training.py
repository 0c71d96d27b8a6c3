"""Tiny configs and subprocess runners for the trainer tests (tests only)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import ml_collections
import tensorflow_datasets as tfds

from configs import default

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# CPU devices of the pytest process and of a trainer subprocess: XLA:CPU rounds
# differently with another device count, even on one of them.
SIMULATED_CPU_DEVICES = 8
DEMO_MOTION_TINY = 'mvitv2_demo_motion/tiny'  # 40 train, 21 validation videos of 16 frames.


def tiny_config(**overrides):
  """A 2-stage MViTv2 at 32x32 on 10 synthetic classes; dotted overrides."""
  config = default.get_config()
  config.model = 'mvitv2_demo'
  config.model_overrides.embed_dim = 8
  config.model_overrides.depths = (1, 1)
  config.num_classes = 10
  config.image_size = 32
  config.dtype = 'float32'
  config.drop_path_rate = 0.1
  config.batch_size = 16
  config.eval_batch_size = 8
  config.num_train_examples = 160  # 10 steps per epoch.
  config.num_eval_examples = 37  # Uneven: the last eval batch is padded.
  config.num_train_steps = 10
  config.optim.base_lr = 0.03  # 1.9e-3 at batch 16.
  config.optim.warmup_epochs = 0.2
  config.log_every_steps = 5
  config.checkpoint_every_steps = 5
  config.eval_every_steps = -1
  apply_overrides(config, overrides)
  return config


# Tiny members of the BatchNorm families (ResTv2, LITv2) at tiny_config's 32x32: the
# shapes of tests/golden/{rest,lit}/tiny_{restv2,litv2}.pth.
TINY_BATCHNORM = {
    'restv2_demo': dict(embed_dims=(8, 16, 32, 64), depths=(1, 1, 2, 1)),
    'litv2_demo': dict(embed_dims=(8, 16, 32, 64), depths=(1, 1, 2, 1)),
}


def tiny_batchnorm_config(model: str, **overrides):
  """`tiny_config` with a model of `TINY_BATCHNORM` in place of the MViTv2."""
  config = tiny_config()
  config.model = model
  config.model_overrides = ml_collections.ConfigDict(TINY_BATCHNORM[model])
  apply_overrides(config, overrides)
  return config


def demo_shapes_config(data_dir: str, **overrides):
  """The default recipe on `mvitv2_demo_shapes` in `data_dir`, at 32x32 in batches of 8
  (eval 16), shuffled in a buffer of 64; dotted overrides."""
  config = default.get_config()
  config.dataset = 'mvitv2_demo_shapes'
  config.data_dir = data_dir
  config.image_size = 32
  config.batch_size = 8
  config.eval_batch_size = 16
  config.shuffle_buffer = 64
  apply_overrides(config, overrides)
  return config


def tiny_video_config(**overrides):
  """`tiny_config` as a video model: 4-frame clips of the Kinetics recipe's pipeline."""
  from configs.video import kinetics  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.model = 'mvitv2_s_16x4'
  config.model_overrides.num_frames = 4
  config.model_overrides.kv_stride = (1, 2, 2)
  config.image_size = 16
  config.video = kinetics.get_config().video
  config.video.eval_clips = 2
  apply_overrides(config, overrides)
  return config


def apply_overrides(config, overrides):
  """Sets `{'optim.base_lr': 1.0, ...}` on a ConfigDict."""
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value


def subprocess_env(**extra):
  """This process's environment with the repository root on PYTHONPATH."""
  env = dict(os.environ, **extra)
  env['PYTHONPATH'] = os.pathsep.join(
      [REPO_ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
  return env


def free_port() -> int:
  """A TCP port on 127.0.0.1 that was free a moment ago."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_train_subprocess(workdir, overrides, *, devices=1, like_pytest=False, wait=True,
                         hold_after=None, release=None, record=None, distributed=None):
  """Starts `train_subprocess.py`; returns the Popen (or its result).

  Args:
    workdir: the run's workdir.
    overrides: dotted config overrides for `tiny_config`.
    devices: simulated CPU devices the run uses.
    like_pytest: the process has the pytest process's `SIMULATED_CPU_DEVICES` and runs
      on the first `devices` of them, so that it rounds as an in-process run does
      (otherwise it has `devices` and uses them all).
    wait: wait for the exit and return `(returncode, output)`.
    hold_after: hold after saving this step (see train_subprocess.py).
    release: a file whose creation ends the hold.
    record: a directory for the scalars and final params (process 0).
    distributed: `(coordinator 'host:port', num_processes, process_id)`.
  """
  env = subprocess_env()
  cmd = [sys.executable, '-m', 'tests.helpers.train_subprocess', str(workdir),
         json.dumps(overrides)] + ([str(hold_after)] if hold_after is not None else [])
  if like_pytest:
    cmd += ['--devices', str(devices)]
  else:
    env['XLA_FLAGS'] = ' '.join(
        [env.get('XLA_FLAGS', ''), f'--xla_force_host_platform_device_count={devices}']).strip()
  if release:
    cmd += ['--release', str(release)]
  if record:
    cmd += ['--record', str(record)]
  if distributed:
    coordinator, num_processes, process_id = distributed
    cmd += ['--coordinator', coordinator, '--num_processes', str(num_processes),
            '--process_id', str(process_id), '--heartbeat_timeout', '10']
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  if not wait:
    return proc
  out, _ = proc.communicate(timeout=600)
  return proc.returncode, out


class Output:
  """A subprocess's output, read on a thread so that every wait has a timeout."""

  def __init__(self, proc: subprocess.Popen):
    self.proc = proc
    self._lines = []
    self._ended = False
    self._cond = threading.Condition()
    self._thread = threading.Thread(target=self._read, daemon=True)
    self._thread.start()

  def _read(self):
    for line in self.proc.stdout:
      with self._cond:
        self._lines.append(line)
        self._cond.notify_all()
    with self._cond:
      self._ended = True
      self._cond.notify_all()

  def text(self) -> str:
    with self._cond:
      return ''.join(self._lines)

  def wait_for(self, prefix: str, timeout: float = 300) -> str:
    """Waits for a line starting with `prefix`; returns it.

    Raises:
      AssertionError: the output ended or `timeout` passed first (with the output).
    """
    deadline = time.time() + timeout
    with self._cond:
      while True:
        for line in self._lines:
          if line.startswith(prefix):
            return line
        left = deadline - time.time()
        if self._ended or left <= 0:
          break
        self._cond.wait(left)
    raise AssertionError(f'no {prefix!r} line; output:\n{self.text()}')

  def finish(self, timeout: float = 300) -> tuple[int, str]:
    """Waits for the exit (killing the process after `timeout`); `(returncode, output)`."""
    try:
      self.proc.wait(timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
    self._thread.join(10)
    return self.proc.returncode, self.text()


def prepared_tfds(name: str, tmp_path_factory) -> str:
  """Builds the TFDS dataset `name` (a built-in demo) in a fresh temp dir; its data_dir."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder(name, data_dir=data_dir).download_and_prepare()
  return data_dir
