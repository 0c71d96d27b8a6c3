"""Decomposed relative positions of MViTv2: static index grids and table resizing.

Everything here depends only on shapes, so it runs in NumPy at trace time.
"""

import numpy as np


def rel_pos_index(q_size: int, k_size: int) -> np.ndarray:
  """Indices into a rel-pos table for one spatial axis, as the original computes them.

  NOTE: the original computes the offsets in float32 and truncates them to int, with
  ratios that rescale the coarser grid onto the finer one. Values are never negative,
  so truncation is floor. The offset is anchored at the runtime k size, not at the
  table's middle, so smaller inputs use only the low part of the table.

  Args:
    q_size: query grid length along the axis.
    k_size: key grid length along the axis.

  Returns:
    int32 array [q_size, k_size].
  """
  q_ratio = np.float32(max(k_size / q_size, 1.0))
  k_ratio = np.float32(max(q_size / k_size, 1.0))
  dist = (np.arange(q_size, dtype=np.float32)[:, None] * q_ratio -
          np.arange(k_size, dtype=np.float32)[None, :] * k_ratio)
  dist = dist + np.float32((k_size - 1) * float(k_ratio))
  return dist.astype(np.int32)


def table_length(q_size: int, k_size: int) -> int:
  """Rel-pos table length the original allocates for grids of these sizes."""
  return 2 * max(q_size, k_size) - 1


def resize_table(table: np.ndarray, length: int) -> np.ndarray:
  """Resizes a rel-pos table [R, d] to [length, d] by 1-D linear interpolation along R.

  Matches PyTorch `F.interpolate(mode='linear', align_corners=False)`, which timm
  uses to carry tables learned at one input size to another.
  """
  old = table.shape[0]
  if old == length:
    return table
  # Sample positions in the old table for each new entry (half-pixel centres).
  pos = (np.arange(length, dtype=np.float64) + 0.5) * (old / length) - 0.5
  pos = np.clip(pos, 0.0, old - 1)
  lo = np.floor(pos).astype(np.int64)
  hi = np.minimum(lo + 1, old - 1)
  frac = (pos - lo)[:, None]
  resized = table[lo].astype(np.float64) * (1.0 - frac) + table[hi].astype(np.float64) * frac
  return resized.astype(table.dtype)
