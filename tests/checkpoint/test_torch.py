"""Tests for the torch containers (torch_zip, torch_legacy) and torch_pickle: crafted layouts."""

import collections

import ml_dtypes
import numpy as np
import pytest

from mvitv2_jax import checkpoint
from mvitv2_jax.checkpoint import CheckpointFormatError
from tests.helpers import hostile_files
from tests.helpers.checkpoint_files import (Parameter, Storage, Tensor, assert_bitwise_equal,
                                            write_legacy, write_torch_zip)

BF16 = np.dtype(ml_dtypes.bfloat16)


def _layout_checkpoint():
  """A state dict of tricky layouts, and what each must read as."""
  floats = np.arange(24, dtype=np.float32) * 1.5 - 7.0
  bf16 = np.array([1.5, -2.25, 3.0e38, -0.0], BF16)
  longs = np.array([2**40 + 3, -5, 7], np.int64)
  mask = np.array([True, False, True], np.bool_)
  s_f = Storage("FloatStorage", "0", floats)
  state = collections.OrderedDict()
  state["strided"] = Tensor(s_f, 3, (2, 3), (1, 4))
  state["transposed"] = Tensor(s_f, 0, (6, 4), (1, 6))
  state["row"] = Tensor(s_f, 5, (4,), (1,))
  state["scalar"] = Tensor(s_f, 7, (), ())
  state["five_d"] = Tensor(s_f, 0, (2, 1, 1, 3, 4), (12, 12, 12, 4, 1))
  state["empty"] = Tensor(s_f, 0, (0, 3), (3, 1))
  state["param"] = Parameter(Tensor(s_f, 10, (2,), (2,)))
  state["bf16"] = Tensor(Storage("BFloat16Storage", "1", bf16), 1, (3,), (1,))
  state["long"] = Tensor(Storage("LongStorage", "2", longs), 0, (3,), (1,))
  state["mask"] = Tensor(Storage("BoolStorage", "3", mask), 0, (3,), (1,))
  state._metadata = collections.OrderedDict({"": {"version": 1}})
  expected = {
      "strided": np.array([[floats[3 + i + 4 * j] for j in range(3)]
                           for i in range(2)]),
      "transposed": floats.reshape(4, 6).T,
      "row": floats[5:9],
      "scalar": np.array(floats[7]),
      "five_d": floats.reshape(2, 1, 1, 3, 4),
      "empty": np.zeros((0, 3), np.float32),
      "param": floats[[10, 12]],
      "bf16": bf16[1:],
      "long": longs,
      "mask": mask,
  }
  return state, expected


def _assert_layouts(state, expected):
  assert list(state) == list(expected)
  for key, want in expected.items():
    assert_bitwise_equal(state[key], np.array(want, order="C"), key)
    assert state[key].flags.c_contiguous, key


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_zip_layouts(tmp_path, fake_torch, byteorder):
  del fake_torch
  state, expected = _layout_checkpoint()
  path = tmp_path / "layouts.pth"
  write_torch_zip(path, {"epoch": 3, "model_state": state}, folder="layouts",
                  byteorder=byteorder)
  _assert_layouts(checkpoint.read_state_dict(path), expected)


@pytest.mark.parametrize("big_endian", [False, True])
def test_legacy_layouts_and_views(tmp_path, fake_torch, big_endian):
  del fake_torch
  state, expected = _layout_checkpoint()
  # A legacy storage can be a view (key, offset, size) of a larger one.
  root = np.arange(10, dtype=np.float32)
  view = Storage("FloatStorage", "9", root, view=("9_view", 4, 3))
  state["view"] = Tensor(view, 1, (2,), (1,))
  expected["view"] = root[5:7]
  path = tmp_path / "legacy.pth"
  write_legacy(path, {"state_dict": state}, big_endian=big_endian)
  _assert_layouts(checkpoint.read_state_dict(path), expected)


def test_tensor_beyond_storage(tmp_path, fake_torch):
  del fake_torch
  storage = Storage("FloatStorage", "0", np.ones(4, np.float32))
  write_torch_zip(tmp_path / "over.pth", {"w": Tensor(storage, 2, (2, 2), (2, 1))})
  with pytest.raises(CheckpointFormatError, match="reaches element 5"):
    checkpoint.read_state_dict(tmp_path / "over.pth")


def test_unsupported_storage_dtype(tmp_path, fake_torch):
  del fake_torch
  storage = Storage("QInt8Storage", "0", np.ones(4, np.int8))
  write_torch_zip(tmp_path / "q.pth", {"w": Tensor(storage, 0, (4,), (1,))})
  with pytest.raises(CheckpointFormatError,
                     match="unsupported storage dtype torch.QInt8Storage"):
    checkpoint.read(tmp_path / "q.pth")


@pytest.mark.parametrize('case', sorted(hostile_files.HOSTILE_RECORDS))
def test_only_namespace_and_cfgnode_are_read_beside_the_weights(case, tmp_path):
  # Anything else in the position of a run's options, or these built otherwise than
  # pickle builds them, is refused; nothing is called (the batch in test_hostile_files
  # runs the same files through load_params under memory limits).
  path = hostile_files.HOSTILE_RECORDS[case](str(tmp_path))
  with pytest.raises(checkpoint.CheckpointFormatError, match='forbidden|not callable|instance|set '):
    checkpoint.read(path)


def test_namespace_and_cfgnode_are_inert_records(tmp_path):
  torch = pytest.importorskip('torch', reason='writes the file with torch.save')
  import argparse  # pylint: disable=g-import-not-at-top
  args = argparse.Namespace(lr=1e-3, sizes=[1, 2], betas=(0.9, 0.999), name='run')
  path = tmp_path / 'ckpt.pth'
  torch.save({'model': {'w': torch.ones(2)}, 'args': args, 'epoch': 3}, path)
  whole = checkpoint.read(path)
  assert isinstance(whole['args'], checkpoint.Record) and not whole['args']
  assert whole['args'].type_name == 'argparse.Namespace'
  assert whole['args'].state == {'lr': 1e-3, 'sizes': [1, 2], 'betas': (0.9, 0.999),
                                 'name': 'run'}
  state = checkpoint.read_state_dict(path, wrapper_keys=('model',))
  np.testing.assert_array_equal(state['w'], np.ones(2, np.float32))
