"""Tests for mvitv2_jax.checkpoint.reader: real files, the format by content, broken files."""

import functools
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from mvitv2_jax import checkpoint
from mvitv2_jax.checkpoint import CheckpointFormatError
from tests.helpers import golden
from tests.helpers import training
from tests.helpers.checkpoint_files import (Storage, Tensor, assert_bitwise_equal, write_legacy,
                                            write_safetensors, write_torch_zip)
from tests.helpers.golden import recipe_state_dict

DATA = golden.DIR


@functools.lru_cache(maxsize=None)
def _expected(variant):
  return recipe_state_dict(DATA / f"keys_{variant}.json")


def _timm_table(variant):
  with open(DATA / f"config_{variant}.json") as f:
    return json.load(f)["timm_layout"]["official_to_timm_keys"]


# --- Real files ---------------------------------------------------------------


@pytest.mark.parametrize("name,variant", [
    ("tiny.pyth", "tiny"),
    ("tiny_legacy.pyth", "tiny"),
    ("tiny_cls.pyth", "tiny_cls"),
])
def test_official_files_match_recipe(name, variant):
  state = checkpoint.read_state_dict(DATA / name)
  expected = _expected(variant)
  assert list(state) == list(expected)  # The file's key order is kept.
  for key, want in expected.items():
    assert_bitwise_equal(state[key], want, key)


@pytest.mark.parametrize("name,variant", [
    ("tiny_timm.pth", "tiny"),
    ("tiny_timm.safetensors", "tiny"),
    ("tiny_cls_timm.pth", "tiny_cls"),
    ("tiny_cls_timm.safetensors", "tiny_cls"),
])
def test_timm_files_match_recipe(name, variant):
  state = checkpoint.read_state_dict(DATA / name)
  table = _timm_table(variant)
  assert sorted(state) == sorted(timm for _, timm in table)
  expected = _expected(variant)
  for official, timm in table:
    assert_bitwise_equal(state[timm], expected[official], timm)


@pytest.mark.parametrize("name", ["tiny.pyth", "tiny_cls.pyth"])
def test_official_top_level(name):
  obj = checkpoint.read(DATA / name)
  assert sorted(obj) == ["cfg", "epoch", "model_state", "optimizer_state"]
  assert obj["epoch"] == 299
  assert isinstance(obj["cfg"], str) and "MVIT" in obj["cfg"]
  # torch's state dicts carry per-module versions through a BUILD opcode.
  assert obj["model_state"]._metadata[""] == {"version": 1}


def test_legacy_reads_identical_to_zip():
  new = checkpoint.read(DATA / "tiny.pyth")
  old = checkpoint.read(DATA / "tiny_legacy.pyth")
  assert old["epoch"] == new["epoch"] and old["cfg"] == new["cfg"]
  assert list(old["model_state"]) == list(new["model_state"])
  for key, value in new["model_state"].items():
    assert_bitwise_equal(old["model_state"][key], value, key)


@pytest.mark.parametrize("wrapper", ["state_dict", "model", None])
def test_wrappers(tmp_path, fake_torch, wrapper):
  del fake_torch
  state = {"w": Tensor(Storage("FloatStorage", "0", np.ones(2, np.float32)), 0, (2,), (1,))}
  obj = state if wrapper is None else {wrapper: state, "epoch": 1}
  write_torch_zip(tmp_path / "w.pth", obj)
  out = checkpoint.read_state_dict(tmp_path / "w.pth")
  assert list(out) == ["w"] and out["w"].tolist() == [1.0, 1.0]


def test_state_dict_with_non_tensor_entries(tmp_path, fake_torch):
  del fake_torch
  storage = Storage("FloatStorage", "0", np.ones(2, np.float32))
  write_torch_zip(tmp_path / "bad.pth", {"w": Tensor(storage, 0, (2,), (1,)), "step": 3})
  with pytest.raises(CheckpointFormatError, match="not tensors.*'step'"):
    checkpoint.read_state_dict(tmp_path / "bad.pth")


# --- Hostile and broken input -------------------------------------------------


class _Evil:
  """Unpickling this would run fn(*args)."""

  def __init__(self, fn, *args):
    self.fn, self.args = fn, args

  def __reduce__(self):
    return self.fn, self.args


@pytest.mark.parametrize("container", ["zip", "legacy", "plain"])
@pytest.mark.parametrize("use_open", [False, True])
def test_forbidden_globals_never_run(tmp_path, container, use_open):
  marker = tmp_path / "pwned"
  if use_open:
    evil = _Evil(open, str(marker), "w")
    global_name = f"{open.__module__}.{open.__qualname__}"
  else:
    evil = _Evil(os.system, f"touch {marker}")
    global_name = f"{os.system.__module__}.{os.system.__qualname__}"
  path = tmp_path / "evil.pth"
  if container == "zip":
    write_torch_zip(path, {"model_state": {"w": evil}})
  elif container == "legacy":
    write_legacy(path, {"w": evil})
  else:
    path.write_bytes(pickle.dumps({"w": evil}, protocol=2))
  with pytest.raises(CheckpointFormatError) as info:
    checkpoint.read_state_dict(path)
  assert f"forbidden pickle global {global_name}" in str(info.value)
  assert str(path) in str(info.value)
  assert not marker.exists()


def _cut(name, size):
  data = (DATA / name).read_bytes()
  return data[:size if size > 0 else len(data) // 2]


_JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + bytes(100)
_NOT_TORCH_ZIP = (
    b"PK\x03\x04\x14\x00\x00\x00\x00\x00" + bytes(300))  # Header, no body.


@pytest.mark.parametrize("content,pattern", [
    (lambda: _cut("tiny.pyth", 0), "truncated or corrupt zip container"),
    (lambda: _cut("tiny_legacy.pyth", 0), "truncated legacy checkpoint"),
    (lambda: _cut("tiny_legacy.pyth", 3000),
     "truncated or corrupt legacy container.*truncated"),
    (lambda: _cut("tiny_timm.safetensors", 0),
     "truncated safetensors file: tensor"),
    (lambda: _cut("tiny_timm.safetensors", 100),
     "truncated safetensors file: header"),
    (lambda: _NOT_TORCH_ZIP, "truncated or corrupt zip container"),
    (lambda: np.random.default_rng(0).bytes(4096), "not a checkpoint"),
    (lambda: b"", "empty file"),
    (lambda: b"epoch: 299\nmodel_state: none\n" * 10, "not a checkpoint"),
    (lambda: _JPEG, r"not a checkpoint.*\\xff\\xd8\\xff"),
    (lambda: pickle.dumps({"w": [1.0]}, protocol=1), "not a checkpoint"),
], ids=["zip_half", "legacy_half", "legacy_in_pickle", "safetensors_half",
        "safetensors_in_header", "zip_no_directory", "random", "empty", "text",
        "jpeg", "protocol_1_pickle"])
def test_unreadable_files(tmp_path, content, pattern):
  path = tmp_path / "broken.pth"
  path.write_bytes(content())
  with pytest.raises(CheckpointFormatError, match=pattern) as info:
    checkpoint.read(path)
  assert str(info.value).startswith(f"{path}: ")


def test_a_pickle_without_torch_magic_is_plain_data(tmp_path):
  # Once read as a legacy container and refused; now a pickle like detectron2's .pkl.
  path = tmp_path / "plain.pth"
  path.write_bytes(pickle.dumps({"w": [1.0]}, protocol=2))
  assert checkpoint.read(path) == {"w": [1.0]}
  with pytest.raises(CheckpointFormatError, match=r"not tensors \(1\): 'w'"):
    checkpoint.read_state_dict(path)


def test_legacy_magic_in_a_protocol_4_frame(tmp_path, fake_torch):
  del fake_torch
  path = tmp_path / "legacy4.pth"
  write_legacy(path, {"w": Tensor(Storage("FloatStorage", "0", np.ones(2, np.float32)), 0, (2,),
                                  (1,))}, protocol=4)
  assert checkpoint.read_state_dict(path)["w"].tolist() == [1.0, 1.0]


def test_safetensors_header_that_starts_like_a_pickle(tmp_path):
  # A header of 0x280 bytes: the file starts with b"\x80\x02", as a protocol-2 pickle does.
  path = tmp_path / "header640.safetensors"
  write_safetensors(path, {"w": ("F32", np.array([1.5], np.float32))}, header_bytes=0x280)
  assert path.read_bytes()[:2] == b"\x80\x02"
  assert checkpoint.read_state_dict(path)["w"].tolist() == [1.5]


def test_zip_without_data_pkl(tmp_path):
  path = tmp_path / "other.zip"
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("notes/readme.txt", "hello")
  with pytest.raises(CheckpointFormatError, match="not a PyTorch checkpoint"):
    checkpoint.read(path)


@pytest.mark.slow
def test_reads_without_torch():
  code = (
      "import sys\n"
      "sys.modules['torch'] = None\n"  # Any `import torch` now fails.
      "from mvitv2_jax import checkpoint\n"
      f"a = checkpoint.read_state_dict({str(DATA / 'tiny.pyth')!r})\n"
      f"b = checkpoint.read_state_dict("
      f"{str(DATA / 'tiny_timm.safetensors')!r})\n"
      "print(len(a), len(b))\n")
  out = subprocess.run([sys.executable, "-c", code], env=training.subprocess_env(), check=True,
                       capture_output=True, text=True, timeout=120)
  assert out.stdout.split() == ["127", "127"]
