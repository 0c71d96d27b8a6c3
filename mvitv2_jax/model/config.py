"""The architecture of an MViTv2 variant and the static plan of its blocks."""

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from mvitv2_jax.model import rel_pos


@dataclasses.dataclass(frozen=True)
class MViTv2Config:
  """Architecture of one MViTv2 variant (defaults: MViTv2-S)."""
  embed_dim: int = 96
  depths: Sequence[int] = (1, 2, 11, 2)
  num_heads: int = 1  # Heads in stage 1; doubled at each later stage.
  num_classes: int = 1000
  image_size: int = 224  # Build size: fixes the rel-pos table lengths.
  # True: the stage-entry block widens in attention (T/S/B/H, *-cls). False: the last
  # block of each stage widens in its MLP (the released MViTv2-L ImageNet-1K weights).
  dim_mul_in_att: bool = True
  cls_token: bool = False
  # Cls variants only. False: residual pooling skips the cls row (official HEAD).
  # True: it adds the pooled q to the cls row too (timm, official before Aug 2022).
  cls_residual_q: bool = False
  mlp_ratio: float = 4.0
  patch_kernel: int = 7
  patch_stride: int = 4
  patch_padding: int = 3
  pool_kernel: int = 3
  pool_mode: str = 'conv'  # 'conv' (MViTv2), or 'avg' / 'max' (paper ablations).
  kv_stride: int = 4  # Initial kv stride; divided by the q stride at each stage entry.
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
  attention_impl: str = 'auto'  # 'auto', 'einsum' or 'dot_product'.
  pool_impl: str = 'auto'  # 'auto', 'conv' (XLA's windowed ops) or 'slices'.


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """Static shape plan of one block, as the original builds it."""
  dim_in: int
  dim_out: int
  att_dim: int
  num_heads: int
  q_stride: int
  kv_stride: int
  rel_pos_len: int  # From the build size; 0 when rel-pos tables are unused.
  drop_path: float


def pooled_grid(grid: tuple[int, ...], stride: int) -> tuple[int, ...]:
  """The grid after pooling with `stride` (padding k // 2): ceil(n / stride) per axis."""
  return tuple(-(-n // stride) for n in grid)


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
  stage_entries = set(np.cumsum(cfg.depths)[:-1].tolist())  # Blocks with q stride 2.
  stage_of = np.cumsum([i in stage_entries for i in range(depth + 1)])
  drop_rates = np.linspace(0.0, cfg.drop_path_rate, depth)
  size = cfg.image_size // cfg.patch_stride  # Token grid at the build size.
  kv_stride = cfg.kv_stride
  specs = []
  dim_in = cfg.embed_dim
  for i in range(depth):
    q_stride = 2 if i in stage_entries else 1
    # The adaptive kv stride shrinks before the strided block is built.
    kv_stride = max(kv_stride // q_stride, 1)
    heads = cfg.num_heads * 2**stage_of[i]
    if cfg.dim_mul_in_att:
      dim_out = att_dim = cfg.embed_dim * 2**stage_of[i]
    else:
      dim_out, att_dim = cfg.embed_dim * 2**stage_of[i + 1], dim_in
    specs.append(BlockSpec(
        dim_in=dim_in, dim_out=dim_out, att_dim=att_dim, num_heads=int(heads),
        q_stride=q_stride, kv_stride=kv_stride,
        rel_pos_len=rel_pos.table_length(size // q_stride, size // kv_stride),
        drop_path=float(drop_rates[i])))
    size //= q_stride
    dim_in = dim_out
  return specs
