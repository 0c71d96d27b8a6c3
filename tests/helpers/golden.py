"""The golden data of the original PyTorch MViTv2 (tests/golden) and its weight recipe.

Every tensor of the official (pyslowfast) state dict is drawn from a generator
seeded by its key, so any test can rebuild the expected weights bit for bit.
"""

import json
import math
import pathlib
import zlib

import numpy as np

DIR = pathlib.Path(__file__).resolve().parent.parent / 'golden'
VIDEO_DIR = DIR / 'video'  # PySlowFast's MViT (MViTv2 video, MViTv1 video and image).

# The small architectures of the golden `tiny` files, as `create_model('mvitv2_t', **...)`.
TINY = dict(embed_dim=8, depths=(1, 1, 2, 1), image_size=64, num_classes=10)
TINY_CLS = dict(embed_dim=8, num_heads=2, depths=(2, 2, 2, 1), dim_mul_in_att=False,
                cls_token=True, image_size=64, num_classes=10)


def load(name: str):
  """The arrays of tests/golden/golden_<name>.npz (inputs, logits), or of video/<name>."""
  path = DIR / f'golden_{name}.npz'
  return np.load(path if path.exists() else VIDEO_DIR / f'golden_{name}.npz')


def video_input(name: str) -> np.ndarray:
  """The golden input of a PySlowFast variant, rebuilt from the seed recipe and checked."""
  config = json.loads((VIDEO_DIR / f'config_{name}.json').read_text())
  batch, frames, size = config['input_shape'][0], config['NUM_FRAMES'], config['CROP_SIZE']
  x = np.random.default_rng([1526, frames, size]).standard_normal(
      (batch, frames, size, size, 3)).astype(np.float32)
  outputs = load(name)
  if len(config['input_shape']) == 4:  # An image model: frame 0.
    x = x[:, 0]
  np.testing.assert_allclose(x.sum(dtype=np.float64), outputs['input_sum'], rtol=1e-9)
  np.testing.assert_array_equal(x.reshape(-1)[:16], outputs['input_first'])
  return x


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
  if key.endswith(("rel_pos_h", "rel_pos_w", "rel_pos_t")):
    w = 0.05 * z
  elif key == "cls_token" or key.startswith("pos_embed"):
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
  """The whole official state dict described by a tests/golden/keys_*.json.

  Args:
    keys_json_path: path of a JSON list of [key, shape] pairs (or a golden name, e.g. 'tiny').

  Returns:
    dict of key -> float32 array, in the file's order.
  """
  if isinstance(keys_json_path, str) and '/' not in keys_json_path:
    name = keys_json_path
    keys_json_path = DIR / f'keys_{name}.json'
    if not keys_json_path.exists():
      keys_json_path = VIDEO_DIR / f'keys_{name}.json'
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
