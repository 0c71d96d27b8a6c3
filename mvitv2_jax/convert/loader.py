"""Official PyTorch MViTv2 checkpoints -> Flax params, strictly.

Accepts the original repository's `.pyth` files (state dict under `model_state`),
bare state dicts (`.pth`/`.pt`) and `.safetensors`, in the official or timm key
layout, plus Flax params checkpoints written by the convert CLI. Files are read by
`mvitv2_jax.checkpoint`, which never runs code from them and needs no torch.
"""

import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mvitv2_jax import checkpoint
from mvitv2_jax import model as mvit
from mvitv2_jax.convert import keys
from mvitv2_jax.model import rel_pos
from mvitv2_jax.model import stacking

_HEAD = (('head', 'kernel'), ('head', 'bias'))
_MAX_LISTED = 12
_MAX_NAME = 100


class ConversionError(ValueError):
  """A checkpoint that does not fit the requested model; the one-line message says how."""


def expected_shapes(model: mvit.MViTv2) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flax param path -> shape of `model` with one entry per block (scanned runs unstacked).

  Computed without allocating params.
  """
  model = mvit.MViTv2(dataclasses.replace(model.cfg, scan_blocks=False))
  inputs = jax.ShapeDtypeStruct((1, *model.cfg.input_size, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), inputs)['params']
  return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(shapes).items()}


def _name(key: str) -> str:
  # Keys come from the file: long or unprintable ones are shown bounded, on one line.
  return key if len(key) <= _MAX_NAME and key.isprintable() else checkpoint.describe(key)


def _listing(title: str, items: list[str]) -> str:
  shown = [_name(item) for item in items[:_MAX_LISTED]]
  more = f' ... and {len(items) - len(shown)} more' if len(items) > len(shown) else ''
  return f'; {title} ({len(items)}): {", ".join(shown)}{more}'


_REL_POS = ('rel_pos_t', 'rel_pos_h', 'rel_pos_w')
_POS_EMBED = ('pos_embed', 'pos_embed_spatial', 'pos_embed_temporal')
# Tensors whose size follows the build size or frame count, resized on load.
_SIZED = _REL_POS + _POS_EMBED


def _resize_pos_embed(name: str, value: np.ndarray, want: tuple[int, ...],
                      cfg: mvit.MViTv2Config) -> np.ndarray | None:
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


def image_size_multiple(cfg: mvit.MViTv2Config) -> int:
  """What build sizes must be a multiple of: the patch stride times the stage strides.

  Each stage entry divides the token grid by its q stride; the image models' rel-pos
  tables assume these divisions are exact. Models that resize their tables when applied
  (PySlowFast's) or have none need only the patch stride.
  """
  patch = cfg.per_axis(cfg.patch_stride)[-1]
  if cfg.rel_pos_interpolate or not cfg.rel_pos:
    return patch
  return patch * cfg.per_axis(cfg.q_stride)[-1] ** (len(cfg.depths) - 1)


def guess_variant(state_dict: dict[str, np.ndarray]) -> str | None:
  """The known variant whose tensors (except rel-pos lengths and head) match, if any."""
  num_blocks = len({key.split('.')[1] for key in state_dict if key.startswith('blocks.')})
  for name in mvit.model_names():
    cfg = mvit.variant_config(name)
    # Cheap filters first: tracing a variant's shapes takes seconds.
    if sum(cfg.depths) != num_blocks or cfg.cls_token != ('cls_token' in state_dict):
      continue
    for dim_mul_in_att in (None, False, True):  # The variant as registered, then both layouts.
      overrides = {} if dim_mul_in_att is None else {'dim_mul_in_att': dim_mul_in_att}
      model = mvit.create_model(name, **overrides)
      shapes = {keys.flax_to_official_key(p): s for p, s in expected_shapes(model).items()}
      if set(shapes) != set(state_dict):
        continue
      if all(shapes[k] == keys.to_flax_layout(k, v, len(shapes[k])).shape
             for k, v in state_dict.items()
             if not k.startswith('head.') and not k.endswith(_SIZED)):
        return name if dim_mul_in_att is None else f'{name} with dim_mul_in_att={dim_mul_in_att}'
  return None


def convert_state_dict(state_dict: dict[str, np.ndarray], model: mvit.MViTv2, *,
                       drop_head: bool = False, seed: int = 0) -> dict[str, Any]:
  """Maps a PyTorch MViT state dict onto the params of `model`, strictly.

  Every source tensor must be used once and every Flax param filled. Rel-pos tables and
  position embeddings of another build size or frame count are resized by linear
  interpolation.

  Args:
    state_dict: official or timm keys -> arrays in PyTorch layout.
    model: the target `MViTv2` (its config fixes shapes and table lengths).
    drop_head: re-initialise the classifier (a new label set) instead of loading it.
    seed: RNG seed for the re-initialised head.

  Returns:
    The float32 Flax params pytree, in the block layout of `model` (see `scan_blocks`).

  Raises:
    ConversionError: listing missing, unexpected and shape-mismatched tensors, and
      naming the variant the checkpoint looks like.
  """
  cfg = model.cfg
  if keys.is_timm_layout(state_dict):
    state_dict = keys.timm_to_official(state_dict, cfg.depths)
  expected = expected_shapes(model)
  params, seen, unexpected, mismatched, head_mismatch = {}, set(), [], [], []
  for key, value in state_dict.items():
    path = keys.official_to_flax_path(key)
    want = expected.get(path)
    value = keys.to_flax_layout(key, np.asarray(value), want and len(want))
    seen.add(path)
    resized = None
    if want is not None and value.shape != want:
      if path[-1] in _REL_POS and value.ndim == 2 and value.shape[1:] == want[1:]:
        resized = rel_pos.resize_table(value.astype(np.float32), want[0])
      elif path[-1] in _POS_EMBED:
        resized = _resize_pos_embed(path[-1], value.astype(np.float32), want, cfg)
    if want is None:
      unexpected.append(key)
    elif path in _HEAD and drop_head:
      continue
    elif resized is not None:
      params[path] = resized
    elif value.shape != want:
      (head_mismatch if path in _HEAD else mismatched).append(
          f'{_name(key)} {tuple(value.shape)} vs {want}')
    else:
      params[path] = value
  if drop_head:
    params.update(_fresh_head(expected, seed))
  missing = [keys.flax_to_official_key(p) for p in expected
             if p not in seen and not (drop_head and p in _HEAD)]
  if unexpected or missing or mismatched or head_mismatch:
    message = f'Checkpoint does not fit {_describe(cfg)}'
    if missing:
      message += _listing('missing', missing)
    if unexpected:
      message += _listing('unexpected', unexpected)
    if mismatched:
      message += _listing('shape mismatch (checkpoint vs model, Flax layout)', mismatched)
    if head_mismatch:
      message += _listing('head shape mismatch', head_mismatch)
      message += ('; to fine-tune on a new label set, pass drop_head=True (CLI: --drop-head) '
                  'to initialise a fresh head, or set num_classes to the checkpoint\'s')
    if missing or unexpected or mismatched:
      guess = guess_variant(state_dict)
      message += (f'; the checkpoint looks like {guess}' if guess else
                  '; it matches no known variant: is it an MViT checkpoint?')
    raise ConversionError(message)
  params = traverse_util.unflatten_dict(
      {path: np.asarray(value, np.float32) for path, value in params.items()})
  return stacking.stack(params, cfg)


def _describe(cfg: mvit.MViTv2Config) -> str:
  frames = f', num_frames={cfg.num_frames}' if cfg.num_frames else ''
  return (f'MViT (embed_dim={cfg.embed_dim}, depths={tuple(cfg.depths)}, '
          f'num_heads={cfg.num_heads}, dim_mul_in_att={cfg.dim_mul_in_att}, '
          f'cls_token={cfg.cls_token}, num_classes={cfg.num_classes}, '
          f'image_size={cfg.image_size}{frames})')


def _fresh_head(expected, seed: int) -> dict:
  kernel = mvit.trunc_normal_init(jax.random.key(seed), expected[_HEAD[0]], jnp.float32)
  return {_HEAD[0]: np.asarray(kernel), _HEAD[1]: np.zeros(expected[_HEAD[1]], np.float32)}


def inflate_state_dict(state_dict: dict[str, np.ndarray], model: mvit.MViTv2, *,
                       seed: int = 0) -> dict[str, np.ndarray]:
  """An image MViT state dict as one for the video `model`, as the paper initialises video
  models from image ones.

  2-D kernels (patch stem, pooling) become the centre frame of the 3-D kernels, the other
  frames zero; spatial rel-pos tables are kept (resized later if their length differs);
  temporal ones start at zero; a class token the image model lacks starts fresh. With the
  image model's strides and identical frames, the video model computes the image model.

  Args:
    state_dict: an image checkpoint (official or timm keys, PyTorch layout).
    model: the video model.
    seed: RNG seed of a fresh class token.

  Returns:
    The state dict in official keys and PyTorch layout, for `convert_state_dict`.
  """
  cfg = model.cfg
  if not cfg.num_frames:
    raise ConversionError(f'Inflation makes video models; {_describe(cfg)} takes images.')
  if keys.is_timm_layout(state_dict):
    state_dict = keys.timm_to_official(state_dict, cfg.depths)
  expected = {keys.flax_to_official_key(p): s for p, s in expected_shapes(model).items()}
  out = {}
  for key, value in state_dict.items():
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
    out['cls_token'] = np.asarray(mvit.trunc_normal_init(
        jax.random.key(seed), expected['cls_token'], jnp.float32))
  return out


def params_to_state_dict(params: dict[str, Any]) -> dict[str, np.ndarray]:
  """Flax params (either block layout) -> official-layout PyTorch state dict (NumPy arrays)."""
  out = {}
  for path, value in traverse_util.flatten_dict(stacking.unstack(params)).items():
    key = keys.flax_to_official_key(path)
    out[key] = keys.to_torch_layout(key, np.asarray(value))
  return out


def _read_converted(path: str) -> dict[str, np.ndarray]:
  """The params of a directory written by the convert CLI, as an official state dict."""
  item = os.path.join(path, 'default')  # CheckpointManager's layout (a run's best/<step>).
  if not os.path.isdir(item):
    item = path
  if not os.path.isfile(os.path.join(item, '_METADATA')):
    raise checkpoint.CheckpointFormatError(
        f'{path}: a directory without an orbax _METADATA file; expected a params checkpoint '
        'written by mvitv2-convert or a run\'s best/<step>')
  # Orbax is only needed for converted checkpoints.
  from mvitv2_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  try:
    params = checkpointing.restore_params(path)
  # Orbax and tensorstore raise these for missing, truncated or malformed files.
  except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
    reason = (str(e).splitlines() or [''])[0][:200]
    raise checkpoint.CheckpointFormatError(
        f'{path}: cannot restore the params checkpoint ({type(e).__name__}: {reason})') from e
  leaves = traverse_util.flatten_dict(params) if isinstance(params, dict) else None
  if not leaves or not all(isinstance(v, np.ndarray) and all(isinstance(k, str) for k in p)
                           for p, v in leaves.items()):
    raise checkpoint.CheckpointFormatError(
        f'{path}: the orbax checkpoint does not hold a params tree of arrays')
  return params_to_state_dict(params)


def read_state_dict(path: str, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
  """Reads a PyTorch file or a Flax params checkpoint directory as an official state dict.

  Args:
    path: a checkpoint file (see `mvitv2_jax.checkpoint`) or a converted params directory.
    max_bytes: the reader's memory cap (see `checkpoint.max_bytes_setting`).

  Returns:
    Official key -> array in PyTorch layout.

  Raises:
    CheckpointFormatError: the path is missing, not a regular file or a converted
      directory, or its content cannot be read safely; the one-line message names it.
  """
  if os.path.isdir(path):
    return _read_converted(path)
  return checkpoint.read_state_dict(path, max_bytes=max_bytes)


def load_params(path: str, model_name: str, *, num_classes: int | None = None,
                image_size: int | None = None, drop_head: bool = False, inflate: bool = False,
                seed: int = 0, max_bytes: int | None = None, **overrides) -> dict[str, Any]:
  """Loads a checkpoint as Flax params for `models.create_model(model_name, ...)`.

  Args:
    path: `.pyth`/`.pth`/`.pt`/`.safetensors` file (official or timm layout), or a
      params checkpoint directory written by `python -m mvitv2_jax.convert`.
    model_name: a name from `models.model_names()`.
    num_classes: classifier width of the target model (default: the variant's).
    image_size: build size of the target model (rel-pos tables are resized to it).
    drop_head: initialise the head fresh instead of loading it (required when
      num_classes differs from the checkpoint's).
    inflate: the checkpoint is an image model's, to initialise the video model
      `model_name` (see `inflate_state_dict`).
    seed: RNG seed for a fresh head.
    max_bytes: the reader's memory cap (see `checkpoint.max_bytes_setting`).
    **overrides: other `MViTv2Config` fields (e.g. `cls_residual_q`).

  Returns:
    The float32 params pytree.

  Raises:
    CheckpointFormatError: the file cannot be read safely (see `read_state_dict`).
    ConversionError: it does not fit the model. Both are ValueErrors with a one-line
      message that starts with `path`.
  """
  if image_size is not None:
    overrides['image_size'] = image_size
  model = mvit.create_model(model_name, num_classes=num_classes, **overrides)
  state_dict = read_state_dict(path, max_bytes=max_bytes)
  try:
    if inflate:
      state_dict = inflate_state_dict(state_dict, model, seed=seed)
    return convert_state_dict(state_dict, model, drop_head=drop_head, seed=seed)
  except ConversionError as e:
    raise ConversionError(f'{path}: {e}') from e
  except ValueError as e:  # From the key mapping: a timm stage the model lacks.
    raise ConversionError(f'{path}: {str(e)[:300]}') from e
