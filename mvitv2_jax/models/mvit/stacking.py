"""Params of scanned block runs: stacked under `blocks_<first>_<last>`, one row per block.

`MViTv2Config.scan_blocks` computes each run of identical blocks with one `nn.scan`,
whose params carry a leading axis over the run. These functions move between that
layout and the one-entry-per-block layout (`blocks_<i>`) of the official checkpoints.
"""

import re
from typing import Any

import numpy as np

from mvitv2_jax.models.mvit.config import MViTv2Config, block_runs, block_specs

_STACKED = re.compile(r'blocks_(\d+)_(\d+)$')


def run_name(run: list[int]) -> str:
  return f'blocks_{run[0]}' if len(run) == 1 else f'blocks_{run[0]}_{run[-1]}'


def is_stacked(path: tuple[Any, ...]) -> bool:
  """Whether a param path (keys or tree path entries) lies in a scanned run."""
  return any(_STACKED.match(str(getattr(k, 'key', k))) for k in path)


def stack(params: dict[str, Any], cfg: MViTv2Config) -> dict[str, Any]:
  """One-entry-per-block params -> the layout of `cfg` (stacked runs if `scan_blocks`)."""
  out = dict(params)
  for run in block_runs(cfg, block_specs(cfg)):
    if len(run) > 1:
      rows = [out.pop(f'blocks_{i}') for i in run]
      out[run_name(run)] = _map(lambda *leaves: np.stack(leaves), *rows)
  return out


def unstack(params: dict[str, Any]) -> dict[str, Any]:
  """Any layout -> one entry per block (`blocks_<i>`)."""
  out = {}
  for name, value in params.items():
    match = _STACKED.match(name)
    if not match:
      out[name] = value
      continue
    first, last = int(match[1]), int(match[2])
    for row, i in enumerate(range(first, last + 1)):
      out[f'blocks_{i}'] = _map(lambda leaf, row=row: np.asarray(leaf)[row], value)
  return out


def _map(fn, *trees):
  if isinstance(trees[0], dict):
    return {k: _map(fn, *(t[k] for t in trees)) for k in trees[0]}
  return fn(*trees)
