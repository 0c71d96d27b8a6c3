"""Tests for mvitv2_jax.checkpoint: real, crafted and hostile files."""

import collections
import functools
import io
import json
import os
import pickle
import subprocess
import sys
import types
import zipfile

import ml_dtypes
import numpy as np
import pytest

from mvitv2_jax import checkpoint
from mvitv2_jax.checkpoint import CheckpointFormatError
from tests.helpers import golden
from tests.helpers import training
from tests.helpers.golden import recipe_state_dict

DATA = golden.DIR
BF16 = np.dtype(ml_dtypes.bfloat16)


@functools.lru_cache(maxsize=None)
def _expected(variant):
  return recipe_state_dict(DATA / f"keys_{variant}.json")


def _timm_table(variant):
  with open(DATA / f"config_{variant}.json") as f:
    return json.load(f)["timm_layout"]["official_to_timm_keys"]


def _assert_bitwise_equal(actual, expected, what):
  assert isinstance(actual, np.ndarray), what
  assert actual.dtype == expected.dtype, what
  assert actual.shape == expected.shape, what
  assert actual.tobytes() == expected.tobytes(), what


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
    _assert_bitwise_equal(state[key], want, key)


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
    _assert_bitwise_equal(state[timm], expected[official], timm)


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
    _assert_bitwise_equal(old["model_state"][key], value, key)


# --- Crafting torch-layout files ----------------------------------------------


@pytest.fixture
def fake_torch(monkeypatch):
  """Modules named like torch's, so that pickle writes torch's own globals."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")
  for name in ("FloatStorage", "BFloat16Storage", "LongStorage", "BoolStorage",
               "QInt8Storage"):
    setattr(torch, name, type(name, (), {"__module__": "torch"}))
  for name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
    fn = lambda *args: None  # Never called: only its name is pickled.
    fn.__module__, fn.__name__, fn.__qualname__ = "torch._utils", name, name
    setattr(utils, name, fn)
  torch._utils = utils
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  return torch


class _Storage:
  """Pickled as torch's persistent id for a storage."""

  def __init__(self, type_name, key, data, view=None):
    self.type_name, self.key, self.data, self.view = type_name, key, data, view


class _Tensor:
  """Pickled as torch pickles a tensor: _rebuild_tensor_v2(storage, ...)."""

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, tuple(size), tuple(stride))

  def __reduce__(self):
    rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
    return rebuild, self.args + (False, collections.OrderedDict())


class _Parameter:
  """Pickled as torch pickles an nn.Parameter."""

  def __init__(self, tensor):
    self.tensor = tensor

  def __reduce__(self):
    rebuild = sys.modules["torch._utils"]._rebuild_parameter
    return rebuild, (self.tensor, True, collections.OrderedDict())


class _TorchPickler(pickle.Pickler):
  """Writes _Storage objects as persistent ids, collecting them by key."""

  def __init__(self, file, legacy=False):
    super().__init__(file, protocol=2)
    self.legacy = legacy
    self.storages = {}

  def persistent_id(self, obj):
    if not isinstance(obj, _Storage):
      return None
    self.storages[obj.key] = obj
    pid = ("storage", getattr(sys.modules["torch"], obj.type_name), obj.key,
           "cpu", obj.data.size)
    return pid + (obj.view,) if self.legacy else pid


def _storage_bytes(data, big_endian):
  return data.byteswap().tobytes() if big_endian else data.tobytes()


def _write_torch_zip(path, obj, folder="archive", byteorder="little"):
  """Lays out obj as torch >= 1.6 saves it."""
  buf = io.BytesIO()
  pickler = _TorchPickler(buf)
  pickler.dump(obj)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
    zf.writestr(f"{folder}/data.pkl", buf.getvalue())
    zf.writestr(f"{folder}/byteorder", byteorder)
    zf.writestr(f"{folder}/version", "3\n")
    for key, storage in pickler.storages.items():
      zf.writestr(f"{folder}/data/{key}",
                  _storage_bytes(storage.data, byteorder == "big"))


def _write_legacy(path, obj, big_endian=False):
  """Lays out obj as torch < 1.6 saves it."""
  order = "big" if big_endian else "little"
  with open(path, "wb") as f:
    pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": not big_endian,
                 "type_sizes": {"short": 2, "int": 4, "long": 8}}, f,
                protocol=2)
    pickler = _TorchPickler(f, legacy=True)
    pickler.dump(obj)
    keys = sorted(pickler.storages)
    pickle.dump(keys, f, protocol=2)
    for key in keys:
      data = pickler.storages[key].data
      f.write(data.size.to_bytes(8, order, signed=True))
      f.write(_storage_bytes(data, big_endian))


def _write_safetensors(path, tensors):
  """tensors: name -> (safetensors dtype code, array)."""
  header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for name, (code, arr) in tensors.items():
    blob = arr.tobytes()
    header[name] = {"dtype": code, "shape": list(arr.shape),
                    "data_offsets": [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
  raw = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))


# --- Crafted layouts ----------------------------------------------------------


def _layout_checkpoint():
  """A state dict of tricky layouts, and what each must read as."""
  floats = np.arange(24, dtype=np.float32) * 1.5 - 7.0
  bf16 = np.array([1.5, -2.25, 3.0e38, -0.0], BF16)
  longs = np.array([2**40 + 3, -5, 7], np.int64)
  mask = np.array([True, False, True], np.bool_)
  s_f = _Storage("FloatStorage", "0", floats)
  state = collections.OrderedDict()
  state["strided"] = _Tensor(s_f, 3, (2, 3), (1, 4))
  state["transposed"] = _Tensor(s_f, 0, (6, 4), (1, 6))
  state["row"] = _Tensor(s_f, 5, (4,), (1,))
  state["scalar"] = _Tensor(s_f, 7, (), ())
  state["five_d"] = _Tensor(s_f, 0, (2, 1, 1, 3, 4), (12, 12, 12, 4, 1))
  state["empty"] = _Tensor(s_f, 0, (0, 3), (3, 1))
  state["param"] = _Parameter(_Tensor(s_f, 10, (2,), (2,)))
  state["bf16"] = _Tensor(_Storage("BFloat16Storage", "1", bf16), 1, (3,), (1,))
  state["long"] = _Tensor(_Storage("LongStorage", "2", longs), 0, (3,), (1,))
  state["mask"] = _Tensor(_Storage("BoolStorage", "3", mask), 0, (3,), (1,))
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
    _assert_bitwise_equal(state[key], np.array(want, order="C"), key)
    assert state[key].flags.c_contiguous, key


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_zip_layouts(tmp_path, fake_torch, byteorder):
  del fake_torch
  state, expected = _layout_checkpoint()
  path = tmp_path / "layouts.pth"
  _write_torch_zip(path, {"epoch": 3, "model_state": state},
                   folder="layouts", byteorder=byteorder)
  _assert_layouts(checkpoint.read_state_dict(path), expected)


@pytest.mark.parametrize("big_endian", [False, True])
def test_legacy_layouts_and_views(tmp_path, fake_torch, big_endian):
  del fake_torch
  state, expected = _layout_checkpoint()
  # A legacy storage can be a view (key, offset, size) of a larger one.
  root = np.arange(10, dtype=np.float32)
  view = _Storage("FloatStorage", "9", root, view=("9_view", 4, 3))
  state["view"] = _Tensor(view, 1, (2,), (1,))
  expected["view"] = root[5:7]
  path = tmp_path / "legacy.pth"
  _write_legacy(path, {"state_dict": state}, big_endian=big_endian)
  _assert_layouts(checkpoint.read_state_dict(path), expected)


@pytest.mark.parametrize("wrapper", ["state_dict", "model", None])
def test_wrappers(tmp_path, fake_torch, wrapper):
  del fake_torch
  state = {"w": _Tensor(_Storage("FloatStorage", "0", np.ones(2, np.float32)),
                        0, (2,), (1,))}
  obj = state if wrapper is None else {wrapper: state, "epoch": 1}
  _write_torch_zip(tmp_path / "w.pth", obj)
  out = checkpoint.read_state_dict(tmp_path / "w.pth")
  assert list(out) == ["w"] and out["w"].tolist() == [1.0, 1.0]


def test_state_dict_with_non_tensor_entries(tmp_path, fake_torch):
  del fake_torch
  storage = _Storage("FloatStorage", "0", np.ones(2, np.float32))
  _write_torch_zip(tmp_path / "bad.pth",
                   {"w": _Tensor(storage, 0, (2,), (1,)), "step": 3})
  with pytest.raises(CheckpointFormatError, match="not tensors.*'step'"):
    checkpoint.read_state_dict(tmp_path / "bad.pth")


def test_tensor_beyond_storage(tmp_path, fake_torch):
  del fake_torch
  storage = _Storage("FloatStorage", "0", np.ones(4, np.float32))
  _write_torch_zip(tmp_path / "over.pth", {"w": _Tensor(storage, 2, (2, 2),
                                                        (2, 1))})
  with pytest.raises(CheckpointFormatError, match="reaches element 5"):
    checkpoint.read_state_dict(tmp_path / "over.pth")


def test_unsupported_storage_dtype(tmp_path, fake_torch):
  del fake_torch
  storage = _Storage("QInt8Storage", "0", np.ones(4, np.int8))
  _write_torch_zip(tmp_path / "q.pth", {"w": _Tensor(storage, 0, (4,), (1,))})
  with pytest.raises(CheckpointFormatError,
                     match="unsupported storage dtype torch.QInt8Storage"):
    checkpoint.read(tmp_path / "q.pth")


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
  _write_safetensors(path, tensors)
  state = checkpoint.read_state_dict(path)
  assert list(state) == list(tensors)
  for name, (_, want) in tensors.items():
    _assert_bitwise_equal(state[name], want, name)
  state["f16"][0] = 1.0  # Arrays are the caller's to modify.


def test_safetensors_bad_entries(tmp_path):
  path = tmp_path / "f8.safetensors"
  _write_safetensors(path, {"x": ("F8_E4M3", np.zeros(2, np.uint8))})
  with pytest.raises(CheckpointFormatError,
                     match="unsupported dtype 'F8_E4M3'"):
    checkpoint.read_state_dict(path)
  path = tmp_path / "offsets.safetensors"
  _write_safetensors(path, {"x": ("F32", np.zeros(2, np.uint8))})
  with pytest.raises(CheckpointFormatError, match="do not fit shape"):
    checkpoint.read_state_dict(path)


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
    _write_torch_zip(path, {"model_state": {"w": evil}})
  elif container == "legacy":
    _write_legacy(path, {"w": evil})
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
    (lambda: pickle.dumps({"w": [1.0]}, protocol=2),
     "without torch's legacy magic number"),
], ids=["zip_half", "legacy_half", "legacy_in_pickle", "safetensors_half",
        "safetensors_in_header", "zip_no_directory", "random", "empty", "text",
        "jpeg", "plain_pickle"])
def test_unreadable_files(tmp_path, content, pattern):
  path = tmp_path / "broken.pth"
  path.write_bytes(content())
  with pytest.raises(CheckpointFormatError, match=pattern) as info:
    checkpoint.read(path)
  assert str(info.value).startswith(f"{path}: ")


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
