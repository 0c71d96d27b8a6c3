"""Checkpoint files laid out as torch and safetensors write them, built without torch.

`fake_torch_modules` installs modules named like torch's, so that `pickle` writes torch's
own globals for the stand-ins below; the writers then lay the pickle and its storages
out as torch >= 1.6 (zip), torch < 1.6 (legacy) or safetensors do.
"""

import collections
import io
import json
import pickle
import sys
import types
import zipfile

import numpy as np


def fake_torch_modules(monkeypatch) -> types.ModuleType:
  """Installs modules named like torch's (until the test ends); returns `torch`."""
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


class Storage:
  """Pickled as torch's persistent id for a storage."""

  def __init__(self, type_name, key, data, view=None):
    self.type_name, self.key, self.data, self.view = type_name, key, data, view


class Tensor:
  """Pickled as torch pickles a tensor: _rebuild_tensor_v2(storage, ...)."""

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, tuple(size), tuple(stride))

  def __reduce__(self):
    rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
    return rebuild, self.args + (False, collections.OrderedDict())


class Parameter:
  """Pickled as torch pickles an nn.Parameter."""

  def __init__(self, tensor):
    self.tensor = tensor

  def __reduce__(self):
    rebuild = sys.modules["torch._utils"]._rebuild_parameter
    return rebuild, (self.tensor, True, collections.OrderedDict())


class TorchPickler(pickle.Pickler):
  """Writes Storage objects as persistent ids, collecting them by key."""

  def __init__(self, file, legacy=False, protocol=2):
    super().__init__(file, protocol=protocol)
    self.legacy = legacy
    self.storages = {}

  def persistent_id(self, obj):
    if not isinstance(obj, Storage):
      return None
    self.storages[obj.key] = obj
    pid = ("storage", getattr(sys.modules["torch"], obj.type_name), obj.key,
           "cpu", obj.data.size)
    return pid + (obj.view,) if self.legacy else pid


def _storage_bytes(data, big_endian):
  return data.byteswap().tobytes() if big_endian else data.tobytes()


def write_torch_zip(path, obj, folder="archive", byteorder="little"):
  """Lays out obj as torch >= 1.6 saves it."""
  buf = io.BytesIO()
  pickler = TorchPickler(buf)
  pickler.dump(obj)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
    zf.writestr(f"{folder}/data.pkl", buf.getvalue())
    zf.writestr(f"{folder}/byteorder", byteorder)
    zf.writestr(f"{folder}/version", "3\n")
    for key, storage in pickler.storages.items():
      zf.writestr(f"{folder}/data/{key}",
                  _storage_bytes(storage.data, byteorder == "big"))


def write_legacy(path, obj, big_endian=False, protocol=2):
  """Lays out obj as torch < 1.6 saves it (torch.save's pickle_protocol: `protocol`)."""
  order = "big" if big_endian else "little"
  with open(path, "wb") as f:
    pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=protocol)
    pickle.dump(1001, f, protocol=protocol)
    pickle.dump({"protocol_version": 1001, "little_endian": not big_endian,
                 "type_sizes": {"short": 2, "int": 4, "long": 8}}, f,
                protocol=protocol)
    pickler = TorchPickler(f, legacy=True, protocol=protocol)
    pickler.dump(obj)
    keys = sorted(pickler.storages)
    pickle.dump(keys, f, protocol=protocol)
    for key in keys:
      data = pickler.storages[key].data
      f.write(data.size.to_bytes(8, order, signed=True))
      f.write(_storage_bytes(data, big_endian))


def write_safetensors(path, tensors, header_bytes=None):
  """tensors: name -> (safetensors dtype code, array); the header padded to `header_bytes`."""
  header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for name, (code, arr) in tensors.items():
    blob = arr.tobytes()
    header[name] = {"dtype": code, "shape": list(arr.shape),
                    "data_offsets": [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
  raw = json.dumps(header).encode()
  if header_bytes is not None:
    raw = raw.ljust(header_bytes)  # The reference library pads with spaces too.
  with open(path, "wb") as f:
    f.write(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))


def assert_bitwise_equal(actual, expected, what):
  assert isinstance(actual, np.ndarray), what
  assert actual.dtype == expected.dtype, what
  assert actual.shape == expected.shape, what
  assert actual.tobytes() == expected.tobytes(), what
