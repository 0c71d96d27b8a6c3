"""Strict conversion of a PyTorch state dict onto a model's Flax params, for any family.

The family's `KeyTable` says how names and layouts map; this module applies it: every
source tensor used once, every param filled, tensors of another build size resized by the
family's hooks, and otherwise one error naming the missing, unexpected and mismatched
tensors and the variant the file looks like. Models with variables besides params
(BatchNorm's `batch_stats`) get those filled the same way, from the keys the table's
`collections` send there; buffers the model computes itself (`num_batches_tracked`,
rel-pos index buffers) are checked by the table's `buffers` and dropped. Pure NumPy; the
model's shapes come from `jax.eval_shape`, so no params are allocated.
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


def expected_variables(model: nn.Module) -> dict[str, dict[Path, tuple[int, ...]]]:
  """Collection -> Flax path -> shape of `model`'s variables ('params', and e.g.
  'batch_stats'), one entry per block (scanned runs unstacked).

  Computed without allocating them.
  """
  family = registry.family_of(model)
  plain = family.module_class(family.unscanned(model.cfg))
  inputs = jax.ShapeDtypeStruct((1, *family.input_shape(plain.cfg)), jnp.float32)
  variables = jax.eval_shape(plain.init, jax.random.key(0), inputs)
  return {collection: {path: tuple(leaf.shape)
                       for path, leaf in traverse_util.flatten_dict(tree).items()}
          for collection, tree in variables.items()}


def expected_shapes(model: nn.Module) -> dict[Path, tuple[int, ...]]:
  """Flax param path -> shape of `model`, one entry per block (scanned runs unstacked).

  Computed without allocating params.
  """
  return expected_variables(model)['params']


def _collection(table: registry.KeyTable, key: str) -> str:
  """The variable collection a source key fills."""
  return next((c for pattern, c in table.collections if re.search(pattern, key)), 'params')


def _buffer_check(table: registry.KeyTable, key: str):
  """The check of a source key the model computes instead of loading, or None."""
  return next((check for pattern, check in table.buffers if re.search(pattern, key)), None)


def _name(key: str) -> str:
  # Keys come from the file: long or unprintable ones are shown bounded, on one line.
  return key if len(key) <= _MAX_NAME and key.isprintable() else checkpoint.describe(key)


def _listing(title: str, items: list[str], named: bool = False) -> str:
  """`items` as a bounded list; `named`: already passed through `_name`."""
  shown = [item if named else _name(item) for item in items[:_MAX_LISTED]]
  more = f' ... and {len(items) - len(shown)} more' if len(items) > len(shown) else ''
  return f'; {title} ({len(items)}): {", ".join(shown)}{more}'


def _fits(table: registry.KeyTable, state_dict: dict[str, np.ndarray],
          expected: dict[str, dict[Path, tuple[int, ...]]]) -> bool:
  """Whether every tensor has a variable of its shape (tables of other sizes and the head
  aside)."""
  paths = {(_collection(table, key), flax_path(table, key)): key for key in state_dict
           if _buffer_check(table, key) is None}
  if set(paths) != {(c, p) for c, shapes in expected.items() for p in shapes}:
    return False
  return all(expected[c][path] == to_flax_layout(key, state_dict[key],
                                                 len(expected[c][path])).shape
             for (c, path), key in paths.items()
             if path not in table.head and path[-1] not in table.resize)


def guess_variant(state_dict: dict[str, np.ndarray], family: registry.Family) -> str | None:
  """The first of the family's candidate variants whose tensors fit the state dict, if any."""
  for label, cfg in family.checkpoint.guesses(state_dict):
    if _fits(family.checkpoint, state_dict, expected_variables(family.module_class(cfg))):
      return label
  return None


def convert_state_dict(state_dict: dict[str, np.ndarray], model: nn.Module, *,
                       drop_head: bool = False, seed: int = 0) -> dict[str, Any]:
  """Maps a PyTorch state dict onto the variables of `model`, strictly.

  Every source tensor must be used once (or, a buffer the model computes, checked and
  dropped) and every Flax variable filled. Tensors whose shape follows the build size
  (e.g. rel-pos tables, position embeddings) are resized by the family's hooks.

  Args:
    state_dict: source keys -> arrays in PyTorch layout (any layout the family normalises).
    model: the target module (its config fixes shapes and table lengths).
    drop_head: initialise the classifier fresh (a new label set) instead of loading it.
    seed: RNG seed for the fresh head.

  Returns:
    The float32 Flax params pytree, in the layout of `model` (e.g. scanned runs stacked).
    A model with other variables (BatchNorm's statistics) gets the whole variables dict
    instead, `{'params': ..., 'batch_stats': ...}`, as `model.apply` takes it.

  Raises:
    ConversionError: listing missing, unexpected, shape-mismatched and refused tensors,
      and naming the variant the checkpoint looks like.
  """
  family = registry.family_of(model)
  table, cfg = family.checkpoint, model.cfg
  state_dict = table.normalize(state_dict, cfg)
  expected_all = expected_variables(model)
  expected = expected_all['params']
  params, seen, unexpected, mismatched, head_mismatch, refused = {}, set(), [], [], [], []
  others = {collection: {} for collection in expected_all if collection != 'params'}
  for key, value in state_dict.items():
    check = _buffer_check(table, key)
    if check is not None:
      reason = check(key, np.asarray(value), cfg)
      if reason:
        refused.append(f'{_name(key)} ({reason})')
      continue
    path, collection = flax_path(table, key), _collection(table, key)
    want = expected_all.get(collection, {}).get(path)
    value = to_flax_layout(key, np.asarray(value), want and len(want))
    if collection != 'params':
      seen.add((collection, path))
      if want is None:
        unexpected.append(key)
      elif value.shape != want:
        mismatched.append(f'{_name(key)} {tuple(value.shape)} vs {want}')
      else:
        others[collection][path] = value
      continue
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
  missing += [torch_key(table, p) for c in others for p in expected_all[c] if (c, p) not in seen]
  if unexpected or missing or mismatched or head_mismatch or refused:
    message = f'Checkpoint does not fit {family.describe(cfg)}'
    if missing:
      message += _listing('missing', missing)
    if unexpected:
      message += _listing('unexpected', unexpected)
    if mismatched:
      message += _listing('shape mismatch (checkpoint vs model, Flax layout)', mismatched)
    if refused:
      message += _listing('buffers unlike the model\'s own', refused, named=True)
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
  params = family.stack(params, cfg)
  if not others:
    return params
  return {'params': params, **{
      c: traverse_util.unflatten_dict({p: np.asarray(v, np.float32) for p, v in leaves.items()})
      for c, leaves in others.items()}}


def is_variables(tree: Any) -> bool:
  """Whether a converted tree is a variables dict (`{'params': ..., 'batch_stats': ...}`)
  rather than params alone."""
  return isinstance(tree, dict) and 'params' in tree and len(tree) > 1 and all(
      isinstance(v, dict) for v in tree.values())


def as_variables(tree: Any) -> dict[str, Any]:
  """What `model.apply` takes, from params alone or a variables dict (`load_params`)."""
  return tree if is_variables(tree) else {'params': tree}


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
  """Flax params (any block layout), or a variables dict as `convert_state_dict` returns
  it, of a variant -> a state dict in its family's source keys and layout."""
  family = registry.family_of(model_name)
  trees = dict(params) if is_variables(params) else {'params': params}
  trees['params'] = family.unstack(trees['params'])
  out = {}
  for tree in trees.values():
    for path, value in traverse_util.flatten_dict(tree).items():
      key = torch_key(family.checkpoint, path)
      out[key] = to_torch_layout(key, np.asarray(value))
  return out
