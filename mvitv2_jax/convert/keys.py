"""Names and layouts: PyTorch MViT state dicts (official, PySlowFast, timm) <-> Flax params.

Official keys look like `blocks.3.attn.qkv.weight`; timm's like
`stages.1.blocks.2.attn.qkv.weight`. Flax paths mirror the official names:
`('blocks_3', 'attn', 'qkv', 'kernel')`. Pure NumPy; no torch, no JAX.
"""

import re

import numpy as np

# Official module names that differ in Flax (the rest keep their name).
_MODULE_RENAMES = {'patch_embed.proj': 'patch_embed', 'head.projection': 'head'}
# timm block-level names -> official.
_TIMM_RENAMES = (('shortcut_proj_attn', 'proj'), ('shortcut_proj_mlp', 'proj'),
                 ('head.fc', 'head.projection'))


def is_timm_layout(state_dict: dict) -> bool:
  return any(key.startswith('stages.') for key in state_dict)


def timm_to_official(state_dict: dict, depths) -> dict:
  """Renames timm keys (`stages.s.blocks.j`, `shortcut_proj_*`, `head.fc`) to official ones."""
  offsets = np.concatenate([[0], np.cumsum(depths)])
  out = {}
  for key, value in state_dict.items():
    match = re.match(r'stages\.(\d+)\.blocks\.(\d+)\.(.*)', key)
    if match:
      stage, block, rest = int(match[1]), int(match[2]), match[3]
      if stage >= len(depths):
        raise ValueError(f'{key[:100]}: stage {stage} does not exist in a model with depths '
                         f'{tuple(depths)}')
      key = f'blocks.{offsets[stage] + block}.{rest}'
    for old, new in _TIMM_RENAMES:
      key = key.replace(old, new)
    out[key] = value
  return out


def official_to_flax_path(key: str) -> tuple[str, ...]:
  """Flax param path of an official state-dict key."""
  module, _, leaf = key.rpartition('.')
  for old, new in _MODULE_RENAMES.items():
    if module == old:
      module = new
  parts = [p for p in re.sub(r'blocks\.(\d+)', r'blocks_\1', module).split('.') if p]
  if leaf == 'bias':
    return (*parts, 'bias')
  if leaf != 'weight':  # rel_pos_h, rel_pos_w, cls_token: plain parameters.
    return (*parts, leaf)
  if parts and parts[-1] in ('pool_q', 'pool_k', 'pool_v'):  # Depthwise kernels are plain params.
    return tuple(parts)
  if parts and re.fullmatch(r'norm\w*', parts[-1]):
    return (*parts, 'scale')
  return (*parts, 'kernel')


def flax_to_official_key(path: tuple[str, ...]) -> str:
  """Inverse of `official_to_flax_path`."""
  if path[-1] in ('kernel', 'scale'):
    parts, leaf = path[:-1], 'weight'
  elif path[-1] in ('pool_q', 'pool_k', 'pool_v'):
    parts, leaf = path, 'weight'
  else:
    parts, leaf = path[:-1], path[-1]
  module = '.'.join(parts)
  for old, new in _MODULE_RENAMES.items():
    if module == new:
      module = old
  module = re.sub(r'blocks_(\d+)', r'blocks.\1', module)
  return f'{module}.{leaf}' if module else leaf


def to_flax_layout(key: str, value: np.ndarray, ndim: int | None = None) -> np.ndarray:
  """PyTorch tensor layout -> Flax layout.

  Conv OI[D]HW -> [D]HWIO, Linear (out, in) -> (in, out).

  Args:
    key: the official key.
    value: the tensor.
    ndim: the rank the model expects, if known: a (O, I, 1, kh, kw) Conv3d weight
      becomes a 2-D kernel for a 4-D target (as the original's image loader squeezes it).
  """
  if not key.endswith('.weight'):
    return value
  if value.ndim == 5 and value.shape[2] == 1 and ndim in (None, 4):
    value = value[:, :, 0]
  if value.ndim == 5:
    return np.transpose(value, (2, 3, 4, 1, 0))
  if value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))
  if value.ndim == 2:
    return value.T
  return value


def to_torch_layout(key: str, value: np.ndarray) -> np.ndarray:
  """Inverse of `to_flax_layout` (for exporting)."""
  if not key.endswith('.weight'):
    return value
  if value.ndim == 5:
    return np.transpose(value, (4, 3, 0, 1, 2))
  if value.ndim == 4:
    return np.transpose(value, (3, 2, 0, 1))
  if value.ndim == 2:
    return value.T
  return value
