"""The MViT key table: official, PySlowFast and timm state dicts <-> Flax params.

Official keys look like `blocks.3.attn.qkv.weight`; timm's like
`stages.1.blocks.2.attn.qkv.weight`. Flax paths mirror the official names:
`('blocks_3', 'attn', 'qkv', 'kernel')`. Pure NumPy and JAX initialisers; no torch.
"""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvitv2_jax.models import layers
from mvitv2_jax.models import registry
from mvitv2_jax.models.mvit import rel_pos
from mvitv2_jax.models.mvit import variants
from mvitv2_jax.models.mvit.config import MViTv2Config

# timm block-level names -> official.
_TIMM_RENAMES = (('shortcut_proj_attn', 'proj'), ('shortcut_proj_mlp', 'proj'),
                 ('head.fc', 'head.projection'))
REL_POS = ('rel_pos_t', 'rel_pos_h', 'rel_pos_w')
POS_EMBED = ('pos_embed', 'pos_embed_spatial', 'pos_embed_temporal')


def is_timm_layout(state_dict: dict) -> bool:
  return any(key.startswith('stages.') for key in state_dict)


def timm_to_official(state_dict: dict, cfg: MViTv2Config) -> dict:
  """Renames timm keys (`stages.s.blocks.j`, `shortcut_proj_*`, `head.fc`) to official ones."""
  if not is_timm_layout(state_dict):
    return state_dict
  offsets = np.concatenate([[0], np.cumsum(cfg.depths)])
  out = {}
  for key, value in state_dict.items():
    match = re.match(r'stages\.(\d+)\.blocks\.(\d+)\.(.*)', key)
    if match:
      stage, block, rest = int(match[1]), int(match[2]), match[3]
      if stage >= len(cfg.depths):
        raise ValueError(f'{key[:100]}: stage {stage} does not exist in a model with depths '
                         f'{tuple(cfg.depths)}')
      key = f'blocks.{offsets[stage] + block}.{rest}'
    for old, new in _TIMM_RENAMES:
      key = key.replace(old, new)
    out[key] = value
  return out


def _resize_rel_pos(value: np.ndarray, want: tuple[int, ...], cfg: MViTv2Config):
  """A rel-pos table [R, d] of another build size, linearly resized to the model's length."""
  del cfg
  if value.ndim != 2 or value.shape[1:] != want[1:]:
    return None
  return rel_pos.resize_table(value.astype(np.float32), want[0])


def _pos_embed_resizer(name: str):
  def resize(value: np.ndarray, want: tuple[int, ...], cfg: MViTv2Config):
    return resize_pos_embed(name, value.astype(np.float32), want, cfg)
  return resize


def resize_pos_embed(name: str, value: np.ndarray, want: tuple[int, ...],
                     cfg: MViTv2Config) -> np.ndarray | None:
  """A position embedding [1, N, C] resized to `want` over its grid, or None if it cannot be.

  Linear interpolation per axis (PyTorch's trilinear/bilinear, align_corners=False); the
  class token's entry of a joint table is kept as it is.
  """
  if value.ndim != 3 or value.shape[0] != 1 or value.shape[2] != want[2]:
    return None
  grid = cfg.patch_grid
  if name == 'pos_embed_temporal':
    return rel_pos.resize_table(value[0], want[1])[None]
  prefix = 1 if name == 'pos_embed' and cfg.cls_token else 0
  new = grid[1:] if name == 'pos_embed_spatial' else grid
  tokens = value[0, prefix:]
  # The old grid: the new one with a square spatial part of the checkpoint's size.
  frames = new[0] if len(new) == 3 else 1
  side = math.isqrt(tokens.shape[0] // frames)
  old = ((frames,) if len(new) == 3 else ()) + (side, side)
  if math.prod(old) != tokens.shape[0]:
    return None
  tokens = tokens.reshape(*old, -1)
  for axis, length in enumerate(new):
    tokens = np.moveaxis(rel_pos.resize_table(np.moveaxis(tokens, axis, 0), length), 0, axis)
  return np.concatenate([value[0, :prefix], tokens.reshape(-1, tokens.shape[-1])])[None]


def inflate(state_dict: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]],
            cfg: MViTv2Config, seed: int = 0) -> dict[str, np.ndarray]:
  """An image MViT state dict as one for a video model, as the paper initialises video
  models from image ones.

  2-D kernels (patch stem, pooling) become the centre frame of the 3-D kernels, the other
  frames zero; spatial rel-pos tables are kept (resized later if their length differs);
  temporal ones start at zero; a class token the image model lacks starts fresh. With the
  image model's strides and identical frames, the video model computes the image model.

  Args:
    state_dict: an image checkpoint (official or timm keys, PyTorch layout).
    expected: the video model's official keys -> shapes (Flax layout).
    cfg: the video model's config.
    seed: RNG seed of a fresh class token.

  Returns:
    The state dict in official keys and PyTorch layout.
  """
  if not cfg.num_frames:
    raise ValueError('Inflation makes video models; this one takes images.')
  out = {}
  for key, value in timm_to_official(state_dict, cfg).items():
    want = expected.get(key)
    if want is not None and key.endswith('.weight') and value.ndim == 4 and len(want) == 5:
      frames = want[0]  # Flax layout: [kt, kh, kw, I, O].
      inflated = np.zeros((*value.shape[:2], frames, *value.shape[2:]), value.dtype)
      inflated[:, :, frames // 2] = value
      value = inflated
    out[key] = value
  for key, shape in expected.items():
    if key.endswith('rel_pos_t') and key not in out:
      out[key] = np.zeros(shape, np.float32)
  if 'cls_token' in expected and 'cls_token' not in out:
    out['cls_token'] = np.asarray(layers.trunc_normal_init(
        jax.random.key(seed), expected['cls_token'], jnp.float32))
  return out


def guesses(state_dict: dict[str, np.ndarray]):
  """Variants (and both widening layouts of each) with as many blocks and class tokens."""
  num_blocks = len({key.split('.')[1] for key in state_dict if key.startswith('blocks.')})
  for name, fields in sorted(variants.VARIANTS.items()):
    cfg = MViTv2Config(**fields)
    if sum(cfg.depths) != num_blocks or cfg.cls_token != ('cls_token' in state_dict):
      continue
    yield name, cfg
    for dim_mul_in_att in (False, True):
      yield (f'{name} with dim_mul_in_att={dim_mul_in_att}',
             MViTv2Config(**{**fields, 'dim_mul_in_att': dim_mul_in_att}))


TABLE = registry.KeyTable(
    to_flax=(
        (r'^patch_embed\.proj\.', 'patch_embed.'),
        (r'^head\.projection\.', 'head.'),
        (r'(^|\.)blocks\.(\d+)\.', r'\1blocks_\2.'),
        (r'\.(pool_[qkv])\.weight$', r'.\1'),  # Depthwise kernels are plain params.
        (r'(^|\.)(norm\w*)\.weight$', r'\1\2.scale'),
        (r'\.weight$', '.kernel'),
    ),
    to_torch=(
        (r'^patch_embed\.', 'patch_embed.proj.'),
        (r'^head\.', 'head.projection.'),
        (r'(^|\.)blocks_(\d+)\.', r'\1blocks.\2.'),
        (r'\.(pool_[qkv])$', r'.\1.weight'),
        (r'\.(kernel|scale)$', '.weight'),
    ),
    head={('head', 'kernel'): layers.trunc_normal_init, ('head', 'bias'): nn.initializers.zeros},
    resize={**dict.fromkeys(REL_POS, _resize_rel_pos),
            **{name: _pos_embed_resizer(name) for name in POS_EMBED}},
    normalize=timm_to_official,
    inflate=inflate,
    guesses=guesses,
)
