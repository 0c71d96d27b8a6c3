"""Strict conversion of a PyTorch state dict onto a model's Flax params, for any family.

The family's `KeyTable` says how names and layouts map; this module applies it: every
source tensor used once, every param filled, tensors of another build size resized by the
family's hooks, and otherwise one error naming the missing, unexpected and mismatched
tensors and the variant the file looks like. Pure NumPy; the model's shapes come from
`jax.eval_shape`, so no params are allocated.
"""

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mvitv2_jax import checkpoint
from mvitv2_jax.models import registry

Path = tuple[str, ...]
_MAX_LISTED = 12
_MAX_NAME = 100


class ConversionError(ValueError):
  """A checkpoint that does not fit the requested model; the one-line message says how."""


def _rewrite(name: str, rules: tuple[tuple[str, str], ...]) -> str:
  for pattern, replacement in rules:
    name = re.sub(pattern, replacement, name)
  return name


def flax_path(table: registry.KeyTable, key: str) -> Path:
  """The Flax param path of a source key."""
  return tuple(_rewrite(key, table.to_flax).split('.'))


def torch_key(table: registry.KeyTable, path: Path) -> str:
  """The source key of a Flax param path (the inverse of `flax_path`)."""
  return _rewrite('.'.join(path), table.to_torch)


def to_flax_layout(key: str, value: np.ndarray, ndim: int | None = None) -> np.ndarray:
  """PyTorch layout -> Flax layout: conv OI[D]HW -> [D]HWIO, linear (out, in) -> (in, out).

  Args:
    key: the source key; only `.weight` tensors change layout.
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
  """Inverse of `to_flax_layout`."""
  if not key.endswith('.weight'):
    return value
  if value.ndim == 5:
    return np.transpose(value, (4, 3, 0, 1, 2))
  if value.ndim == 4:
    return np.transpose(value, (3, 2, 0, 1))
  if value.ndim == 2:
    return value.T
  return value


def expected_shapes(model: nn.Module) -> dict[Path, tuple[int, ...]]:
  """Flax param path -> shape of `model`, one entry per block (scanned runs unstacked).

  Computed without allocating params.
  """
  family = registry.family_of(model)
  plain = family.module_class(family.unscanned(model.cfg))
  inputs = jax.ShapeDtypeStruct((1, *family.input_shape(plain.cfg)), jnp.float32)
  shapes = jax.eval_shape(plain.init, jax.random.key(0), inputs)['params']
  return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(shapes).items()}


def _name(key: str) -> str:
  # Keys come from the file: long or unprintable ones are shown bounded, on one line.
  return key if len(key) <= _MAX_NAME and key.isprintable() else checkpoint.describe(key)


def _listing(title: str, items: list[str]) -> str:
  shown = [_name(item) for item in items[:_MAX_LISTED]]
  more = f' ... and {len(items) - len(shown)} more' if len(items) > len(shown) else ''
  return f'; {title} ({len(items)}): {", ".join(shown)}{more}'


def _fits(table: registry.KeyTable, state_dict: dict[str, np.ndarray],
          expected: dict[Path, tuple[int, ...]]) -> bool:
  """Whether every tensor has a param of its shape (tables of other sizes and the head aside)."""
  paths = {flax_path(table, key): key for key in state_dict}
  if set(paths) != set(expected):
    return False
  return all(expected[path] == to_flax_layout(key, state_dict[key], len(expected[path])).shape
             for path, key in paths.items()
             if path not in table.head and path[-1] not in table.resize)


def guess_variant(state_dict: dict[str, np.ndarray], family: registry.Family) -> str | None:
  """The first of the family's candidate variants whose tensors fit the state dict, if any."""
  for label, cfg in family.checkpoint.guesses(state_dict):
    if _fits(family.checkpoint, state_dict, expected_shapes(family.module_class(cfg))):
      return label
  return None


def convert_state_dict(state_dict: dict[str, np.ndarray], model: nn.Module, *,
                       drop_head: bool = False, seed: int = 0) -> dict[str, Any]:
  """Maps a PyTorch state dict onto the params of `model`, strictly.

  Every source tensor must be used once and every Flax param filled. Tensors whose shape
  follows the build size (e.g. rel-pos tables, position embeddings) are resized by the
  family's hooks.

  Args:
    state_dict: source keys -> arrays in PyTorch layout (any layout the family normalises).
    model: the target module (its config fixes shapes and table lengths).
    drop_head: initialise the classifier fresh (a new label set) instead of loading it.
    seed: RNG seed for the fresh head.

  Returns:
    The float32 Flax params pytree, in the layout of `model` (e.g. scanned runs stacked).

  Raises:
    ConversionError: listing missing, unexpected and shape-mismatched tensors, and
      naming the variant the checkpoint looks like.
  """
  family = registry.family_of(model)
  table, cfg = family.checkpoint, model.cfg
  state_dict = table.normalize(state_dict, cfg)
  expected = expected_shapes(model)
  params, seen, unexpected, mismatched, head_mismatch = {}, set(), [], [], []
  for key, value in state_dict.items():
    path = flax_path(table, key)
    want = expected.get(path)
    value = to_flax_layout(key, np.asarray(value), want and len(want))
    seen.add(path)
    resize = table.resize.get(path[-1])
    if want is not None and value.shape != want and resize is not None:
      resized = resize(value, want, cfg)
      value = value if resized is None else resized
    if want is None:
      unexpected.append(key)
    elif path in table.head and drop_head:
      continue
    elif value.shape != want:
      (head_mismatch if path in table.head else mismatched).append(
          f'{_name(key)} {tuple(value.shape)} vs {want}')
    else:
      params[path] = value
  if drop_head:
    keys = jax.random.split(jax.random.key(seed), len(table.head))
    for key, (path, init) in zip(keys, table.head.items()):
      params[path] = np.asarray(init(key, expected[path], jnp.float32))
  missing = [torch_key(table, p) for p in expected
             if p not in seen and not (drop_head and p in table.head)]
  if unexpected or missing or mismatched or head_mismatch:
    message = f'Checkpoint does not fit {family.describe(cfg)}'
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
      guess = guess_variant(state_dict, family)
      message += (f'; the checkpoint looks like {guess}' if guess else
                  f'; it matches no known variant: is it a {family.name} checkpoint?')
    raise ConversionError(message)
  params = traverse_util.unflatten_dict(
      {path: np.asarray(value, np.float32) for path, value in params.items()})
  return family.stack(params, cfg)


def inflate_state_dict(state_dict: dict[str, np.ndarray], model: nn.Module, *,
                       seed: int = 0) -> dict[str, np.ndarray]:
  """An image checkpoint as one for the video `model`, by the family's inflation hook."""
  family = registry.family_of(model)
  if family.checkpoint.inflate is None:
    raise ConversionError(f'The {family.name} family has no inflation from image checkpoints.')
  expected = {torch_key(family.checkpoint, p): s for p, s in expected_shapes(model).items()}
  try:
    return family.checkpoint.inflate(state_dict, expected, model.cfg, seed)
  except ValueError as e:
    raise ConversionError(f'{e} ({family.describe(model.cfg)})') from None


def params_to_state_dict(params: dict[str, Any], model_name: str) -> dict[str, np.ndarray]:
  """Flax params (any block layout) of a variant -> a state dict in its family's source keys
  and layout."""
  family = registry.family_of(model_name)
  out = {}
  for path, value in traverse_util.flatten_dict(family.unstack(params)).items():
    key = torch_key(family.checkpoint, path)
    out[key] = to_torch_layout(key, np.asarray(value))
  return out
