"""The side-by-side driver: workers timed in turn, and the per-round ratio."""

import sys

import pytest

from tests.helpers import training
from tools import side_by_side


@pytest.mark.slow
def test_workers_run_in_turn_and_report_their_steps():
  # Two JAX workers on a tiny model stand in for JAX and PyTorch (timm is not
  # installed here): the same driver, protocol and worker code path.
  flags = ['--variant', 'mvitv2_t', '--batch_size', '1', '--image_size', '32',
           '--mode', 'inference']
  command = [sys.executable, '-m', 'tools.side_by_side', '--worker', 'jax'] + flags
  times = side_by_side.run_in_turn({'a': command, 'b': command}, rounds=3,
                                   env=training.subprocess_env())
  assert list(times) == ['a', 'b']
  assert all(len(ts) == 3 and all(t > 0 for t in ts) for ts in times.values())


def test_a_worker_that_fails_to_start_is_named():
  command = [sys.executable, '-c', 'raise SystemExit(1)']
  with pytest.raises(RuntimeError, match="worker 'broken'"):
    side_by_side.run_in_turn({'broken': command}, rounds=1)


def test_summary_pairs_the_rounds():
  times = {'jax': [1.0, 2.0, 1.0], 'torch': [1.5, 2.0, 3.0]}
  summary = side_by_side.summarize(times, batch_size=8, first='jax', second='torch')
  assert summary['jax_images_per_s_median'] == 8.0
  assert summary['jax_images_per_s_best'] == 8.0
  assert summary['torch_images_per_s_median'] == 4.0
  # Per round: 1.5, 1.0, 3.0.
  assert (summary['ratio_median'], summary['ratio_min'], summary['ratio_max']) == (1.5, 1.0, 3.0)


def test_the_driver_needs_a_torch_interpreter():
  with pytest.raises(SystemExit):
    side_by_side.parse_args(['--modes', 'inference'])


def test_an_official_family_needs_its_checkout():
  with pytest.raises(SystemExit):
    side_by_side.parse_args(['--torch_python', sys.executable, '--variant', 'rest_base'])
  args = side_by_side.parse_args(['--torch_python', sys.executable, '--variant', 'lit_s',
                                  '--official_root', '/src/LIT'])
  assert side_by_side._worker_args(args, 'train', 0.1)[-2:] == ['--official_root', '/src/LIT']  # pylint: disable=protected-access
