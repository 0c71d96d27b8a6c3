"""Checkpoint files and converted directories -> Flax params of a named variant, strictly.

Accepts the original repositories' files (official and PySlowFast `.pyth`, timm `.pth` and
`.safetensors`, in any layout the variant's family knows) and Flax params checkpoints
written by the convert CLI. Files are read by `mvitv2_jax.checkpoint`, which never runs
code from them and needs no torch; the mapping is `engine`'s, driven by the family's key table.
"""

import os
from typing import Any

import numpy as np
from flax import traverse_util

from mvitv2_jax import checkpoint
from mvitv2_jax import models
from mvitv2_jax.convert import engine
from mvitv2_jax.convert.engine import ConversionError


def _read_converted(path: str, model_name: str) -> dict[str, np.ndarray]:
  """The params of a directory written by the convert CLI, as a state dict of the variant's
  family."""
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
  return engine.params_to_state_dict(params, model_name)


def load_params(path: str, model_name: str, *, num_classes: int | None = None,
                image_size: int | None = None, drop_head: bool = False, inflate: bool = False,
                seed: int = 0, max_bytes: int | None = None, **overrides) -> dict[str, Any]:
  """Loads a checkpoint as Flax params for `models.create_model(model_name, ...)`.

  Args:
    path: a `.pyth`/`.pth`/`.pt`/`.safetensors` file (any layout the variant's family
      knows), or a params checkpoint directory written by `python -m mvitv2_jax.convert`.
    model_name: a name from `models.model_names()`.
    num_classes: classifier width of the target model (default: the variant's).
    image_size: build size of the target model (rel-pos tables are resized to it).
    drop_head: initialise the head fresh instead of loading it (required when
      num_classes differs from the checkpoint's).
    inflate: the checkpoint is an image model's, to initialise the video model
      `model_name` (see `inflate_state_dict`).
    seed: RNG seed for a fresh head.
    max_bytes: the file reader's memory cap (see `checkpoint.max_bytes_setting`).
    **overrides: other fields of the family's config (e.g. `cls_residual_q`).

  Returns:
    The float32 params pytree; for a family with other variables (BatchNorm's running
    statistics: ResT, LIT), the variables dict `{'params': ..., 'batch_stats': ...}`.

  Raises:
    CheckpointFormatError: the path is missing, not a regular file or a converted
      directory, or its content cannot be read safely.
    ConversionError: it does not fit the model. Both are ValueErrors with a one-line
      message that starts with `path`.
  """
  if image_size is not None:
    overrides['image_size'] = image_size
  model = models.create_model(model_name, num_classes=num_classes, **overrides)
  if os.path.isdir(path):
    state_dict = _read_converted(path, model_name)
  else:
    wrapper_keys = models.family_of(model_name).checkpoint.wrapper_keys
    state_dict = checkpoint.read_state_dict(
        path, max_bytes=max_bytes, wrapper_keys=wrapper_keys or checkpoint.DEFAULT_WRAPPER_KEYS)
  try:
    if inflate:
      state_dict = engine.inflate_state_dict(state_dict, model, seed=seed)
    return engine.convert_state_dict(state_dict, model, drop_head=drop_head, seed=seed)
  except ConversionError as e:
    raise ConversionError(f'{path}: {e}') from e
  except ValueError as e:  # From the key mapping: a timm stage the model lacks.
    raise ConversionError(f'{path}: {str(e)[:300]}') from e
