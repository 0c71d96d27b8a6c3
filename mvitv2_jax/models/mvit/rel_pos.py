"""Decomposed relative positions of MViTv2: index grids, table resizing, the logit term.

Index grids depend only on shapes, so they are computed in NumPy at trace time.
"""

import jax
import jax.numpy as jnp
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
  q_ratio, k_ratio = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)  # Python floats.
  dist = (np.arange(q_size, dtype=np.float32)[:, None] * np.float32(q_ratio) -
          np.arange(k_size, dtype=np.float32)[None, :] * np.float32(k_ratio))
  # The offset is a double product rounded once to float32, as PyTorch adds a Python scalar.
  dist = dist + np.float32((k_size - 1) * k_ratio)
  return dist.astype(np.int32)


def table_length(q_size: int, k_size: int) -> int:
  """Rel-pos table length the original allocates for grids of these sizes."""
  return 2 * max(q_size, k_size) - 1


def resize_table(table, length: int):
  """Resizes a rel-pos table [R, d] to [length, d] by 1-D linear interpolation along R
  (any array along its first axis).

  Matches PyTorch `F.interpolate(mode='linear', align_corners=False)`, which timm and
  PySlowFast use to carry tables learned at one size to another. Works on NumPy arrays
  (conversion) and on traced ones (PySlowFast resizes when the model runs).
  """
  old = table.shape[0]
  if old == length:
    return table
  # Sample positions in the old table for each new entry (half-pixel centres).
  pos = (np.arange(length, dtype=np.float64) + 0.5) * (old / length) - 0.5
  pos = np.clip(pos, 0.0, old - 1)
  lo = np.floor(pos).astype(np.int64)
  hi = np.minimum(lo + 1, old - 1)
  frac = (pos - lo).reshape(-1, *(1,) * (table.ndim - 1))
  if isinstance(table, np.ndarray):
    resized = table[lo].astype(np.float64) * (1.0 - frac) + table[hi].astype(np.float64) * frac
    return resized.astype(table.dtype)
  frac = frac.astype(np.float32)
  return table[lo] * (1.0 - frac) + table[hi] * frac


def rel_pos_terms(q: jax.Array, q_grid: tuple[int, ...], k_grid: tuple[int, ...],
                  tables: tuple[jax.Array, ...], interpolate: bool = False
                  ) -> tuple[jax.Array, ...]:
  """The decomposed relative-position term of the attention logits, per axis.

  Args:
    q: pooled, normalised, unscaled spatial queries [B, prod(q_grid), heads, d].
    q_grid: the query grid, e.g. (qh, qw) or (qt, qh, qw).
    k_grid: the key grid.
    tables: one [R_a, d] table per axis, shared by all heads.
    interpolate: resize a table whose length is not the 2 * max(q_a, k_a) - 1 the grids
      need (PySlowFast); otherwise a grid needing more than the table is an error.

  Returns:
    Per axis a, float32 [B, heads, *q_grid, k_grid[a]]: q · table[index_a(q_a, k_a)].
  """
  batch, _, heads, dim = q.shape
  q = q.reshape(batch, *q_grid, heads, dim)
  axes = 'tyx'[-len(q_grid):]  # Grid axes of q; 'k' is the key axis, 'c' the channel.
  terms = []
  for axis, (q_size, k_size, table, name) in enumerate(
      zip(q_grid, k_grid, tables, ('time', 'height', 'width')[-len(q_grid):])):
    index = rel_pos_index(q_size, k_size)
    if interpolate:
      table = resize_table(table, table_length(q_size, k_size))
    elif index.max() >= table.shape[0]:
      raise ValueError(
          f'Input too large for this model along {name}: the rel-pos table has '
          f'{table.shape[0]} entries, the grid needs {index.max() + 1}. Build the model with '
          'a larger image_size (converted tables are resized at load time).')
    rel = table[index].astype(q.dtype)  # [q_a, k_a, d]
    terms.append(jnp.einsum(f'b{axes}nc,{axes[axis]}kc->bn{axes}k', q, rel,
                            preferred_element_type=jnp.float32))
  return tuple(terms)
