"""Integrity records of checkpoint directories: the size and SHA-256 of every file.

`write_record` runs once a checkpoint is complete and `verify` before it is restored,
so a truncated, deleted, emptied or bit-flipped file is found and named. The record is
the last file written: a directory without one was never finished.
"""

import hashlib
import json
import os
from typing import Any

from mvitv2_jax.train.errors import CheckpointError

RECORD_FILE = 'integrity.json'
_FORMAT = 1
_CHUNK = 1 << 22


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _files(directory: str) -> list[str]:
  """Paths of every file under `directory` but the record, relative and sorted."""
  found = []
  for root, _, names in os.walk(directory):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), directory)
      if rel != RECORD_FILE:
        found.append(rel)
  return sorted(found)


def write_record(directory: str, metadata: dict[str, Any] | None = None):
  """Records every file of the finished checkpoint `directory`, and `metadata`.

  Args:
    directory: a complete checkpoint directory.
    metadata: JSON-able facts kept with it (e.g. the eval top-1 of best params).
  """
  files = {rel: {'size': os.path.getsize(os.path.join(directory, rel)),
                 'sha256': _sha256(os.path.join(directory, rel))}
           for rel in _files(directory)}
  record = {'format': _FORMAT, 'files': files, 'metadata': metadata or {}}
  path = os.path.join(directory, RECORD_FILE)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(record, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def verify(directory: str) -> dict[str, Any]:
  """Checks `directory` against its record.

  Args:
    directory: a checkpoint directory written with `write_record`.

  Returns:
    The record's metadata.

  Raises:
    CheckpointError: naming the first file that is missing, has another size or
      other contents, or the record itself when it is missing or unreadable.
  """
  path = os.path.join(directory, RECORD_FILE)
  try:
    with open(path) as f:
      record = json.load(f)
    files = record['files']
    metadata = record['metadata']
    if record['format'] != _FORMAT or not isinstance(files, dict):
      raise ValueError(f'format {record["format"]!r}')
  except FileNotFoundError:
    raise CheckpointError(f'{path} is missing: the checkpoint was never completed') from None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f'{path} is unreadable ({type(e).__name__}: {e})') from None
  for rel, expected in sorted(files.items()):
    file = os.path.join(directory, rel)
    if not os.path.isfile(file):
      raise CheckpointError(f'{file} is missing')
    size = os.path.getsize(file)
    if size != expected['size']:
      raise CheckpointError(f'{file} has {size} bytes, the record says {expected["size"]}')
    if _sha256(file) != expected['sha256']:
      raise CheckpointError(f'{file} has other contents than recorded (SHA-256 differs)')
  return metadata
