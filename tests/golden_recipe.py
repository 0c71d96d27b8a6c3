"""The recipe that generated the weights of the test checkpoints in tests/data.

Every tensor of the official (pyslowfast) state dict is drawn from a generator
seeded by its key, so any test can rebuild the expected weights bit for bit.
"""

import json
import math
import zlib

import numpy as np


def recipe(key, shape):
  """The float32 weights the test checkpoints hold under an official key.

  Args:
    key: official MViTv2 state-dict key, e.g. "blocks.0.attn.qkv.weight".
    shape: the tensor's shape.

  Returns:
    A float32 array of that shape.
  """
  rng = np.random.default_rng([2112, zlib.crc32(key.encode("utf-8"))])
  z = rng.standard_normal(tuple(shape))
  if key.endswith(("rel_pos_h", "rel_pos_w")):
    w = 0.05 * z
  elif key == "cls_token":
    w = 0.5 * z
  elif key.endswith(".bias"):
    w = 0.05 * z
  elif len(shape) == 1:
    w = 1.0 + 0.1 * z
  else:
    # A larger head keeps the tiny models' logits from being all alike.
    g = 6.0 if key == "head.projection.weight" else 1.0
    w = (g / math.sqrt(int(np.prod(shape[1:])))) * z
  return w.astype(np.float32)


def recipe_state_dict(keys_json_path):
  """The whole official state dict described by a tests/data/keys_*.json.

  Args:
    keys_json_path: path of a JSON list of [key, shape] pairs.

  Returns:
    dict of key -> float32 array, in the file's order.
  """
  with open(keys_json_path) as f:
    entries = json.load(f)
  return {key: recipe(key, shape) for key, shape in entries}


def write_safetensors(path, state_dict):
  """Writes float32 arrays as a .safetensors file (for converter tests without torch)."""
  header, offset, blobs = {}, 0, []
  for key, value in state_dict.items():
    blob = np.ascontiguousarray(value, dtype='<f4').tobytes()
    header[key] = {'dtype': 'F32', 'shape': list(value.shape),
                   'data_offsets': [offset, offset + len(blob)]}
    offset += len(blob)
    blobs.append(blob)
  header_bytes = json.dumps(header).encode('utf-8')
  with open(path, 'wb') as f:
    f.write(len(header_bytes).to_bytes(8, 'little'))
    f.write(header_bytes)
    for blob in blobs:
      f.write(blob)
