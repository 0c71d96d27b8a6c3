"""FSDP partition rule and the prefetch thread."""

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mvitv2_jax.train import sharding
from tests.helpers import in_process


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


def test_fsdp_spec_keeps_the_scan_axis_of_stacked_params_whole():
  assert sharding.fsdp_spec((8, 768, 3072), 8) == P(None, None, 'data')
  assert sharding.fsdp_spec((16, 4096, 8), 8, stacked=True) == P(None, 'data', None)
