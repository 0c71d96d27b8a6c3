"""Rel-pos index grids and table resizing against the original's definitions."""

import numpy as np

from mvitv2_jax.models.mvit import rel_pos


def test_rel_pos_index_against_brute_force():
  for q, k in [(56, 14), (28, 28), (28, 14), (14, 28), (14, 14), (7, 14), (7, 7), (2, 3), (3, 2),
               (12, 3), (5, 7),
               # MViTv2-L video at 312 px: grids of 78, 39, 20 and 10, non-integer ratios
               # whose float32 offsets land just below an integer.
               (78, 10), (39, 20), (20, 10), (8, 6), (11, 10)]:
    got = rel_pos.rel_pos_index(q, k)
    for i in range(q):
      for j in range(k):
        qr, kr = max(k / q, 1.0), max(q / k, 1.0)
        assert got[i, j] == int(np.float32(np.float32(i * np.float32(qr)) - np.float32(j * np.float32(kr)))
                                + np.float32((k - 1) * kr)), (q, k, i, j)
  # The closed forms of the reference sheet at 224.
  i, j = np.arange(56)[:, None], np.arange(14)[None, :]
  np.testing.assert_array_equal(rel_pos.rel_pos_index(56, 14), i - 4 * j + 52)
  i, j = np.arange(14)[:, None], np.arange(28)[None, :]
  np.testing.assert_array_equal(rel_pos.rel_pos_index(14, 28), 2 * i - j + 27)


def test_resize_table_is_torch_linear_interpolation():
  table = np.arange(5, dtype=np.float32)[:, None] * np.array([[1.0, -2.0]], np.float32)
  np.testing.assert_array_equal(rel_pos.resize_table(table, 5), table)
  # F.interpolate(arange(5), size=10, mode='linear', align_corners=False), worked by hand.
  want = np.array([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4], np.float32)
  np.testing.assert_allclose(rel_pos.resize_table(table, 10)[:, 0], want, atol=1e-6)
  np.testing.assert_allclose(rel_pos.resize_table(table, 10)[:, 1], -2 * want, atol=1e-6)
  np.testing.assert_allclose(rel_pos.resize_table(table, 3)[:, 0], [1 / 3, 2, 11 / 3],
                             atol=1e-6)
