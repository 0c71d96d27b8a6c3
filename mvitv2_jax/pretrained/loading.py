"""Released checkpoints by name: the original file (cached), converted once, as Flax params.

Converted params are cached beside the downloads, under
`converted/<name>-<key>.npz` with a size and SHA-256 record: the key hashes the original
file's SHA-256 and every conversion argument, so another file or option converts anew.
A converted file that no longer matches its record is converted again (it is derived
data; the original's record guards the source).
"""

import hashlib
import json
import os
import sys
from typing import Any

import numpy as np
from flax import traverse_util

from mvitv2_jax.pretrained import download
from mvitv2_jax.pretrained import table

PREFIX = 'pretrained:'  # How `init_from` and --checkpoint name a released checkpoint.
_FORMAT = 1  # Bumped when the conversion changes what it produces.
_BY_NAME = {row.name: row for row in table.CHECKPOINTS}


class UnknownCheckpointError(ValueError):
  """A name that is not in the table; the message lists the names."""


def names() -> list[str]:
  """Every released checkpoint's name, in table order."""
  return list(_BY_NAME)


def get(name: str) -> table.Checkpoint:
  """The table row of `name` (a variant with released weights, or `variant.tag`)."""
  if name.startswith(PREFIX):
    name = name[len(PREFIX):]
  if name not in _BY_NAME:
    raise UnknownCheckpointError(
        f'No released checkpoint {name!r}. Known: {", ".join(_BY_NAME)}.')
  return _BY_NAME[name]


def checkpoint_file(name: str, show_progress: bool = True) -> str:
  """The original file of checkpoint `name`, downloaded into the cache once and verified.

  Raises:
    UnknownCheckpointError: `name` is not in the table.
    download.DownloadError: offline, a dead link, or a file that fails its record; the
      one-line message names the URL and where to place the file by hand.
  """
  row = get(name)
  path = (download.cached_path(row.url) if row.url else download.manual_path(row.filename))
  return download.ensure_file(row.url, path, size=row.size, sha256=row.sha256,
                              manual=row.manual or '', show_progress=show_progress)


def resolve(path_or_name: str, show_progress: bool = True) -> str:
  """A checkpoint path as given, or the cached file of 'pretrained:NAME'."""
  if path_or_name.startswith(PREFIX):
    return checkpoint_file(path_or_name, show_progress)
  return path_or_name


def _conversion_key(row: table.Checkpoint, source_sha256: str, options: dict) -> str:
  text = json.dumps({'format': _FORMAT, 'source': source_sha256, 'model': row.model,
                     'options': options}, sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_converted(path: str) -> dict[str, Any] | None:
  """The params cached at `path` if it matches its record, else None."""
  record = download.read_record(path) if os.path.exists(path) else None
  if record is None:
    return None
  problem = download.mismatch(os.path.getsize(path), download.sha256_of(path),
                              record['size'], record['sha256'])
  if problem:
    print(f'warning: {path}: {problem} (its record); converting again', file=sys.stderr)
    return None
  with np.load(path, allow_pickle=False) as arrays:
    flat = {tuple(key.split('/')): arrays[key] for key in arrays.files}
  return traverse_util.unflatten_dict(flat)


def _write_converted(path: str, params: dict[str, Any]):
  """Writes `path` and its record whole, or not at all."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  flat = {'/'.join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    np.savez(f, **flat)
    f.flush()
    os.fsync(f.fileno())
  download.write_record(path, os.path.getsize(tmp), download.sha256_of(tmp), 'converted')
  os.replace(tmp, path)


def load_pretrained(name: str, *, num_classes: int | None = None, drop_head: bool | None = None,
                    seed: int = 0, show_progress: bool = True, **overrides) -> dict[str, Any]:
  """The Flax params of released checkpoint `name`, downloaded and converted once.

  Args:
    name: a name from `names()`, e.g. 'mvitv2_s' or 'mvitv2_s_16x4.ssv2'.
    num_classes: the head's width (default: the checkpoint's). Another width starts a
      fresh head (`drop_head`), as timm does.
    drop_head: start a fresh head (default: only when `num_classes` differs).
    seed: the fresh head's RNG seed.
    show_progress: draw a progress bar while downloading.
    **overrides: config fields of the model (e.g. image_size=384: rel-pos tables resized).

  Returns:
    The params pytree for `create_model(get(name).model, **get(name).model_overrides,
    **overrides)` (NumPy float32 arrays).

  Raises:
    UnknownCheckpointError, download.DownloadError, and the converter's ValueErrors
    (`convert.ConversionError`, `convert.CheckpointFormatError`): one line each.
  """
  from mvitv2_jax import convert  # pylint: disable=g-import-not-at-top (cycle: models)
  row = get(name)
  num_classes = row.num_classes if num_classes is None else num_classes
  if drop_head is None:
    drop_head = num_classes != row.num_classes
  options = {**row.overrides, **overrides}
  source = checkpoint_file(name, show_progress)
  record = download.read_record(source)
  key = _conversion_key(row, record['sha256'], dict(options, num_classes=num_classes,
                                                    drop_head=drop_head, seed=seed))
  path = os.path.join(download.cache_dir(), 'converted', f'{row.name}-{key}.npz')
  params = _read_converted(path)
  if params is None:
    params = convert.load_params(source, row.model, num_classes=num_classes,
                                 drop_head=drop_head, seed=seed, **options)
    _write_converted(path, params)
  return params


def model_config_overrides(name: str, **overrides) -> dict[str, Any]:
  """The `create_model(get(name).model, **...)` overrides of checkpoint `name` and `overrides`."""
  return {**get(name).model_overrides, **overrides}


def create_model(name: str, num_classes: int | None = None, **overrides):
  """The model of released checkpoint `name`, bound to its params.

  Call it (`model(images)`) or take it apart (`module, variables = model.unbind()`) to
  `jax.jit(module.apply)`.

  Args:
    name: a name from `names()`.
    num_classes: another head width starts a fresh head.
    **overrides: config fields (e.g. dtype='bfloat16', image_size=384).
  """
  from mvitv2_jax import convert, models  # pylint: disable=g-import-not-at-top (cycle)
  row = get(name)
  fields = model_config_overrides(name, **overrides)
  if num_classes is not None:
    fields['num_classes'] = num_classes
  params = load_pretrained(name, num_classes=fields['num_classes'], **overrides)
  module = models.create_model(row.model, **fields)
  return module.bind(convert.as_variables(params))
