"""FSDP partition rule and the prefetch thread."""

import subprocess
import sys
import threading

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mvitv2_jax.train import sharding
from tests.helpers import in_process
from tests.helpers import training


def test_fsdp_spec_shards_largest_divisible_axis():
  assert sharding.fsdp_spec((768, 3072), 8) == P(None, 'data')
  assert sharding.fsdp_spec((3072, 770), 8) == P('data', None)
  assert sharding.fsdp_spec((7, 7, 3, 96), 8) == P()  # Small: replicated.
  assert sharding.fsdp_spec((1001, 1003), 8) == P()  # Nothing divisible.
  assert sharding.fsdp_spec((768, 3072), 1) == P()


def test_prefetch_keeps_order_and_shapes():
  mesh = sharding.create_mesh(in_process.one_device())
  batches = [{'x': np.full((4, 2), i, np.float32)} for i in range(5)]
  out = list(sharding.prefetch(iter(batches), mesh))
  assert [int(b['x'][0, 0]) for b in out] == list(range(5))
  assert out[0]['x'].sharding == sharding.data_sharding(mesh)


def test_prefetch_reraises_source_errors():
  def source():
    yield {'x': np.zeros((2,), np.float32)}
    raise RuntimeError('boom')

  it = sharding.prefetch(source(), sharding.create_mesh(in_process.one_device()))
  next(it)
  with pytest.raises(RuntimeError, match='boom'):
    next(it)


def test_closing_prefetch_ends_its_thread_and_closes_the_source():
  closed = []

  def endless():
    try:
      while True:
        yield {'x': np.zeros((2,), np.float32)}
    finally:
      closed.append(threading.current_thread().name)

  before = set(threading.enumerate())
  it = sharding.prefetch(endless(), sharding.create_mesh(in_process.one_device()))
  next(it)
  it.close()
  assert set(threading.enumerate()) <= before
  assert closed and closed[0] != threading.current_thread().name


@pytest.mark.slow
def test_exit_while_the_source_is_inside_jax_is_clean():
  # Before the thread was joined, each of these runs aborted (exit 134, "terminate
  # called ... FATAL: exception not rethrown").
  for _ in range(3):
    result = subprocess.run(
        [sys.executable, '-m', 'tests.helpers.exit_while_prefetching'], capture_output=True,
        text=True, env=training.subprocess_env(), timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'terminate called' not in result.stderr


def test_fsdp_spec_keeps_the_scan_axis_of_stacked_params_whole():
  assert sharding.fsdp_spec((8, 768, 3072), 8) == P(None, None, 'data')
  assert sharding.fsdp_spec((16, 4096, 8), 8, stacked=True) == P(None, 'data', None)
