"""Tests for mvitv2_jax.checkpoint.safetensors: every dtype, and the entries it refuses."""

import ml_dtypes
import numpy as np
import pytest

from mvitv2_jax import checkpoint
from mvitv2_jax.checkpoint import CheckpointFormatError
from tests.helpers.checkpoint_files import assert_bitwise_equal, write_safetensors

BF16 = np.dtype(ml_dtypes.bfloat16)


def test_safetensors_dtypes(tmp_path):
  tensors = {
      "bf16": ("BF16", np.array([[1.5, -2.25], [3.0e38, -0.0]], BF16)),
      "f16": ("F16", np.array([0.5, -65504.0, 6e-8], np.float16)),
      "f64": ("F64", np.array([np.pi], np.float64)),
      "i64": ("I64", np.array([2**40 + 3, -5], np.int64)),
      "i32": ("I32", np.array([-(2**31)], np.int32)),
      "i16": ("I16", np.array([-300], np.int16)),
      "i8": ("I8", np.array([-7], np.int8)),
      "u8": ("U8", np.array([255], np.uint8)),
      "bool": ("BOOL", np.array([True, False])),
      "scalar": ("F32", np.array(2.5, np.float32)),
      "five_d": ("F32", np.arange(6, dtype=np.float32).reshape(1, 2, 1, 3, 1)),
  }
  path = tmp_path / "dtypes.safetensors"
  write_safetensors(path, tensors)
  state = checkpoint.read_state_dict(path)
  assert list(state) == list(tensors)
  for name, (_, want) in tensors.items():
    assert_bitwise_equal(state[name], want, name)
  state["f16"][0] = 1.0  # Arrays are the caller's to modify.


def test_safetensors_bad_entries(tmp_path):
  path = tmp_path / "f8.safetensors"
  write_safetensors(path, {"x": ("F8_E4M3", np.zeros(2, np.uint8))})
  with pytest.raises(CheckpointFormatError,
                     match="unsupported dtype 'F8_E4M3'"):
    checkpoint.read_state_dict(path)
  path = tmp_path / "offsets.safetensors"
  write_safetensors(path, {"x": ("F32", np.zeros(2, np.uint8))})
  with pytest.raises(CheckpointFormatError, match="do not fit shape"):
    checkpoint.read_state_dict(path)
