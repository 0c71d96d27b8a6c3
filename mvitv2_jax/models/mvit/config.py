"""The architecture of an MViTv2 variant and the static plan of its blocks."""

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from mvitv2_jax.models.mvit import rel_pos


@dataclasses.dataclass(frozen=True)
class MViTv2Config:
  """Architecture of one MViT variant, image or video (defaults: MViTv2-S).

  Per-axis sizes (patch, pooling and strides) take an int for every axis alike or a tuple
  over the token grid's axes: (H, W) for images, (T, H, W) for videos.
  """
  embed_dim: int = 96
  depths: Sequence[int] = (1, 2, 11, 2)
  num_heads: int = 1  # Heads in stage 1; doubled at each later stage.
  num_classes: int = 1000
  image_size: int = 224  # Build size: fixes the rel-pos table lengths.
  # 0: images [B, H, W, 3]. Otherwise videos [B, T, H, W, 3] of this many frames (the build
  # length: it fixes the temporal tables).
  num_frames: int = 0
  # True: the stage-entry block widens in attention (T/S/B/H, *-cls). False: the last
  # block of each stage widens in its MLP (the released MViTv2-L ImageNet-1K weights, MViTv1).
  dim_mul_in_att: bool = True
  cls_token: bool = False
  # Cls variants only. False: residual pooling skips the cls row (official HEAD).
  # True: it adds the pooled q to the cls row too (timm, official before Aug 2022).
  cls_residual_q: bool = False
  mlp_ratio: float = 4.0
  patch_kernel: int | tuple[int, ...] = 7
  patch_stride: int | tuple[int, ...] = 4
  patch_padding: int | tuple[int, ...] = 3
  pool_kernel: int | tuple[int, ...] = 3
  pool_mode: str = 'conv'  # 'conv' (MViTv2), or 'avg' / 'max' (paper ablations).
  kv_stride: int | tuple[int, ...] = 4  # Initial kv stride; divided by q strides on the way.
  q_stride: int | tuple[int, ...] = 2  # The q stride of stage-entry blocks.
  # False: only stage-entry blocks pool q (MViTv1); the others have no pool_q / norm_q.
  pool_q_every_block: bool = True
  rel_pos: bool = True  # Decomposed relative positions (MViTv2), one table per axis.
  # True (PySlowFast): tables whose length differs from what the pooled grids need are
  # resized when applied. False (the image repo): smaller grids use part of the table.
  rel_pos_interpolate: bool = False
  residual_pooling: bool = True  # MViTv2; MViTv1 has none.
  # Absolute position embeddings (MViTv1): '' none, 'joint' one table over all tokens,
  # 'separable' spatial + temporal (+ class) tables.
  abs_pos: str = ''
  drop_path_rate: float = 0.0
  head_dropout_rate: float = 0.0
  dtype: Any = jnp.float32  # Compute dtype.
  param_dtype: Any = jnp.float32
  remat: bool = False  # Rematerialise each block in the backward pass (saves memory).
  # With remat: a `jax.checkpoint_policies` name saying what each block keeps, e.g.
  # 'dots_with_no_batch_dims_saveable' (keep the Dense outputs, recompute the rest).
  # '' recomputes everything.
  remat_policy: str = ''
  # Runs of identical blocks in one `nn.scan` each: compile time stops growing with depth.
  # Their params are stacked (`blocks_4_13/...` [10, ...]); the converter maps both layouts.
  scan_blocks: bool = False
  # Kernels (see `mvitv2_jax.ops`); 'auto' picks per platform when the program is lowered.
  attention_impl: str = 'auto'  # 'auto', 'einsum', 'dot_product', 'xla', 'cudnn', 'pallas'.
  pool_impl: str = 'auto'  # 'auto', 'conv' (XLA's windowed ops) or 'slices'.

  @property
  def input_size(self) -> tuple[int, ...]:
    """(H, W) or (T, H, W) of the inputs the model is built for."""
    spatial = (self.image_size,) * 2
    return (self.num_frames, *spatial) if self.num_frames else spatial

  def per_axis(self, value: int | Sequence[int]) -> tuple[int, ...]:
    """`value` over the grid's axes (an int on every axis alike)."""
    if isinstance(value, int):
      return (value,) * len(self.input_size)
    if len(value) != len(self.input_size):
      raise ValueError(f'{tuple(value)} has {len(value)} axes; the inputs have '
                       f'{len(self.input_size)} ({"T, " if self.num_frames else ""}H, W).')
    return tuple(value)

  @property
  def patch_grid(self) -> tuple[int, ...]:
    """The token grid after the patch stem, at the build size (floor division, as built)."""
    return tuple(n // s for n, s in zip(self.input_size, self.per_axis(self.patch_stride)))


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """Static shape plan of one block, as the original builds it."""
  dim_in: int
  dim_out: int
  att_dim: int
  num_heads: int
  q_stride: tuple[int, ...]
  kv_stride: tuple[int, ...]
  pool_q: bool  # Whether q is pooled (and normalised) at all.
  rel_pos_lens: tuple[int, ...]  # Rel-pos table length per axis (from the build size); () if none.
  drop_path: float


def pooled_grid(grid: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, ...]:
  """The grid after pooling with `strides` (padding k // 2): ceil(n / stride) per axis."""
  return tuple(-(-n // s) for n, s in zip(grid, strides))


def block_runs(cfg: MViTv2Config, specs: list[BlockSpec]) -> list[list[int]]:
  """Consecutive blocks grouped into runs that one scanned block can compute.

  Blocks differing only in their drop-path rate form a run when `cfg.scan_blocks`;
  otherwise every block is a run of its own.
  """
  runs = []
  for i, spec in enumerate(specs):
    same = lambda j: dataclasses.replace(specs[j], drop_path=0.0) == dataclasses.replace(
        spec, drop_path=0.0)
    if cfg.scan_blocks and runs and same(runs[-1][-1]):
      runs[-1].append(i)
    else:
      runs.append([i])
  return runs


def block_specs(cfg: MViTv2Config) -> list[BlockSpec]:
  """Per-block dims, heads, strides and rel-pos table lengths of `cfg`."""
  depth = sum(cfg.depths)
  stage_entries = set(np.cumsum(cfg.depths)[:-1].tolist())  # Blocks with a q stride.
  stage_of = np.cumsum([i in stage_entries for i in range(depth + 1)])
  drop_rates = np.linspace(0.0, cfg.drop_path_rate, depth)
  size = cfg.patch_grid  # Token grid at the build size, floor-divided as the original.
  entry_stride, kv_stride = cfg.per_axis(cfg.q_stride), cfg.per_axis(cfg.kv_stride)
  specs = []
  dim_in = cfg.embed_dim
  for i in range(depth):
    q_stride = entry_stride if i in stage_entries else (1,) * len(size)
    # The adaptive kv stride shrinks before the strided block is built.
    kv_stride = tuple(max(kv // q, 1) for kv, q in zip(kv_stride, q_stride))
    heads = cfg.num_heads * 2**stage_of[i]
    if cfg.dim_mul_in_att:
      dim_out = att_dim = cfg.embed_dim * 2**stage_of[i]
    else:
      dim_out, att_dim = cfg.embed_dim * 2**stage_of[i + 1], dim_in
    rel_pos_lens = tuple(rel_pos.table_length(n // q, n // kv)
                         for n, q, kv in zip(size, q_stride, kv_stride)) if cfg.rel_pos else ()
    specs.append(BlockSpec(
        dim_in=dim_in, dim_out=dim_out, att_dim=att_dim, num_heads=int(heads),
        q_stride=q_stride, kv_stride=kv_stride,
        pool_q=cfg.pool_q_every_block or i in stage_entries, rel_pos_lens=rel_pos_lens,
        drop_path=float(drop_rates[i])))
    size = tuple(n // q for n, q in zip(size, q_stride))
    dim_in = dim_out
  return specs


def image_size_rule(cfg: MViTv2Config) -> tuple[int, str]:
  """What build sizes must be a multiple of, and why: the patch stride times the stage strides.

  Each stage entry divides the token grid by its q stride; the image models' rel-pos
  tables assume these divisions are exact. Models that resize their tables when applied
  (PySlowFast's) or have none need only the patch stride.
  """
  patch = cfg.per_axis(cfg.patch_stride)[-1]
  if cfg.rel_pos_interpolate or not cfg.rel_pos:
    return patch, f'patch stride {patch}'
  stages, q_stride = len(cfg.depths), cfg.per_axis(cfg.q_stride)[-1]
  return (patch * q_stride ** (stages - 1),
          f'patch stride {patch} x {q_stride}^{stages - 1} for its {stages} stages')


def describe(cfg: MViTv2Config) -> str:
  """The architecture fields that tell variants apart, for error messages."""
  frames = f', num_frames={cfg.num_frames}' if cfg.num_frames else ''
  return (f'MViT (embed_dim={cfg.embed_dim}, depths={tuple(cfg.depths)}, '
          f'num_heads={cfg.num_heads}, dim_mul_in_att={cfg.dim_mul_in_att}, '
          f'cls_token={cfg.cls_token}, num_classes={cfg.num_classes}, '
          f'image_size={cfg.image_size}{frames})')
