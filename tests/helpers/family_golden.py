"""The ResT and LIT goldens (tests/golden/rest, tests/golden/lit): state dicts from the recipe,
inputs checked against their checksums, the official outputs.

The weights are rebuilt from `tests/golden/recipe.py` under the official keys of
`keys_<name>.json`; integer buffers (BatchNorm's `num_batches_tracked`, LIT's
`relative_position_index`) come as the original holds them: zero counters, and the index
buffers the original computed, stored in the golden's npz.
"""

import json
import pathlib
import sys

import numpy as np

from tests.helpers import golden

DIR = pathlib.Path(__file__).resolve().parent.parent / 'golden'
sys.path.insert(0, str(DIR))
import recipe  # pylint: disable=g-import-not-at-top,wrong-import-position

TOLERANCE = 1e-4  # fp32 logits; the original's own fp32-vs-fp64 spread is under 3e-5.

# Golden name -> (model name, overrides) building the same architecture.
TINY = {
    'tiny_rest': ('rest_lite', dict(embed_dims=(8, 16, 32, 64), depths=(1, 1, 2, 1),
                                    num_classes=10)),
    'tiny_restv2': ('restv2_tiny', dict(embed_dims=(8, 16, 32, 64), depths=(1, 1, 2, 1),
                                        num_classes=10)),
    'tiny_lit': ('lit_s', dict(embed_dims=(8, 16, 32, 64), num_heads=(1, 2, 4, 8),
                               depths=(1, 1, 2, 1), num_classes=10, image_size=64)),
    'tiny_litv2': ('litv2_s', dict(embed_dims=(8, 16, 32, 64), num_heads=(1, 2, 4, 8),
                                   depths=(1, 1, 2, 1), num_classes=10, image_size=64)),
    'tiny_lit_ti': ('lit_ti', dict(embed_dims=(8, 16, 32, 64), num_heads=(1, 2, 4, 8),
                                   depths=(1, 1, 2, 1), num_classes=10, image_size=64)),
}


def family_of(name: str) -> str:
  return 'rest' if 'rest' in name else 'lit'


def directory(name: str) -> pathlib.Path:
  return DIR / family_of(name)


def keys(name: str) -> dict:
  return json.loads((directory(name) / f'keys_{name}.json').read_text())


def outputs(name: str):
  return np.load(directory(name) / f'golden_{name}.npz')


def ops(family: str):
  return np.load(DIR / family / 'golden_ops.npz')


def images(name: str, size: int) -> np.ndarray:
  """The golden input at `size`, rebuilt from its recipe and checked against the checksums."""
  x = recipe.images(size)
  out = outputs(name)
  np.testing.assert_allclose(x.sum(dtype=np.float64), out[f'input_sum_{size}'], rtol=1e-9)
  np.testing.assert_array_equal(x.reshape(-1)[:16], out[f'input_first_{size}'])
  return x


def state_dict(name: str, size: int | None = None) -> dict[str, np.ndarray]:
  """The official state dict of golden `name` (built for `size` if given), as the original
  holds it: recipe floats, zero step counters, its own index buffers."""
  record = keys(name)
  shapes = record.get(f'shapes_{size}', {}) if size is not None else {}
  family = family_of(name)
  out = {key: recipe.recipe(key, shapes.get(key, shape), family) for key, shape in record['keys']}
  data = outputs(name)
  first = int(next(iter(record['stats'])))
  for key in record['int_buffers']:
    if key.endswith('num_batches_tracked'):
      out[key] = np.zeros((), np.int64)
    elif key.endswith('relative_position_index'):
      stage = key.split('.')[1]
      out[key] = data[f'relative_position_index_{stage}_{size or first}'].astype(np.int64)
    else:
      raise ValueError(f'no rule for the integer buffer {key}')
  return out


def write_safetensors(path, state: dict[str, np.ndarray]):
  """A .safetensors file of float32 and integer tensors."""
  import json as json_lib  # pylint: disable=g-import-not-at-top,reimported
  codes = {np.dtype(np.float32): 'F32', np.dtype(np.int64): 'I64', np.dtype(np.int32): 'I32'}
  if all(v.dtype == np.float32 for v in state.values()):
    return golden.write_safetensors(path, state)
  header, offset, blobs = {}, 0, []
  for key, value in state.items():
    value = np.asarray(value)
    blob = np.ascontiguousarray(value).astype(value.dtype.newbyteorder('<')).tobytes()
    header[key] = {'dtype': codes[value.dtype], 'shape': list(value.shape),
                   'data_offsets': [offset, offset + len(blob)]}
    offset += len(blob)
    blobs.append(blob)
  raw = json_lib.dumps(header).encode()
  with open(path, 'wb') as f:
    f.write(len(raw).to_bytes(8, 'little') + raw + b''.join(blobs))
