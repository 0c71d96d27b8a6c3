"""Two processes on 127.0.0.1 with 2 CPU devices each against one process on 4 devices.

Both runs see the same global batches (tests/helpers/synthetic_data.py), so their
losses and params agree; the two-process run is stopped by SIGTERM on both and
resumed on the way, and a run whose peer dies must end, not hang.
"""

import json
import os
import signal
import time

import jax
import numpy as np
import pytest

from tests.helpers import in_process
from tests.helpers import training

pytestmark = pytest.mark.slow

# 12 steps of 16 images; checkpoints every 4, evals at 6 and 12 over 37 images.
RUN = {'num_train_steps': 12, 'log_every_steps': 1, 'checkpoint_every_steps': 4,
       'eval_every_steps': 6, 'aug.mixup_alpha': 0.0, 'aug.cutmix_alpha': 0.0}


def _start_pair(workdir, record, *, hold_after=None, release=None):
  """Processes 0 and 1 of a two-process run; returns their `Output`s."""
  coordinator = f'127.0.0.1:{training.free_port()}'
  return [training.Output(training.run_train_subprocess(
      workdir, RUN, devices=2, wait=False, hold_after=hold_after, release=release,
      record=record, distributed=(coordinator, 2, i))) for i in range(2)]


def _finish(outputs, timeout=300):
  return [out.finish(timeout) for out in outputs]


def _scalars(record):
  with open(os.path.join(record, 'scalars.json')) as f:
    return {int(k): v for k, v in json.load(f).items()}


@pytest.fixture(scope='module')
def single_process(tmp_path_factory):
  """The uninterrupted run in this process on 4 of its devices: (scalars, params)."""
  state, scalars = in_process.train_tiny(tmp_path_factory.mktemp('one_process'),
                                         devices=jax.devices()[:4], **RUN)
  return scalars, in_process.flat_params(state.params)


def test_two_processes_stopped_and_resumed_match_one(single_process, tmp_path):
  ref_scalars, ref_params = single_process
  release = tmp_path / 'release'
  first = _start_pair(tmp_path / 'run', tmp_path / 'first', hold_after=4, release=release)
  try:
    for out in first:
      out.wait_for('HOLDING 4')
    for out in first:
      out.proc.send_signal(signal.SIGTERM)
    release.touch()
    results = _finish(first)
  finally:
    for out in first:
      out.proc.kill()
  for code, text in results:
    assert code == 128 + signal.SIGTERM, text
    assert 'INTERRUPTED 5:' in text, text
  assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == ['4', '5']

  for code, text in _finish(_start_pair(tmp_path / 'run', tmp_path / 'second')):
    assert code == 0, text
    assert 'Resuming from the checkpoint of step 5.' in text, text
  scalars = {**_scalars(tmp_path / 'first'), **_scalars(tmp_path / 'second')}
  assert sorted(scalars) == sorted(ref_scalars) == list(range(1, 13))
  for step, values in ref_scalars.items():
    np.testing.assert_allclose(scalars[step]['train/loss'], values['train/loss'], rtol=1e-6,
                               err_msg=f'step {step}')
  for step in (6, 12):
    assert scalars[step]['eval/count'] == 37  # Each example once over both processes.
    np.testing.assert_allclose(scalars[step]['eval/loss'], ref_scalars[step]['eval/loss'],
                               rtol=1e-6)
  params = np.load(tmp_path / 'second' / 'params.npz')
  assert sorted(params) == sorted(ref_params)
  for name in ref_params:
    # A bias shared by every key leaves the softmax unchanged: its gradient is rounding
    # noise, which Adam scales up to full steps, so it is not compared.
    if "['norm_k']['bias']" in name:
      continue
    # Gloo sums the gradients across processes in another order than one process does.
    np.testing.assert_allclose(params[name], ref_params[name], atol=2e-5, err_msg=name)


def test_a_dead_process_takes_the_other_down(tmp_path):
  release = tmp_path / 'release'
  pair = _start_pair(tmp_path / 'run', None, hold_after=4, release=release)
  try:
    for out in pair:
      out.wait_for('HOLDING 4')
    pair[1].proc.kill()
    pair[1].finish()
    start = time.time()
    release.touch()
    code, text = pair[0].finish(timeout=240)
  finally:
    for out in pair:
      out.proc.kill()
  assert time.time() - start < 120, f'the survivor hung:\n{text}'
  assert code != 0, text
  assert 'another task died' in text, text
