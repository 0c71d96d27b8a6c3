"""Analytic FLOPs of an MViT forward pass: matmuls, convolutions and einsums.

Real FLOPs, 2 per multiply-add (fvcore's count times 2: MViTv2-S at 224 is 7.0 GMACs =
14 GFLOPs). Normalisation, softmax and activations are not counted.
"""

import math

from mvitv2_jax.models.mvit.config import MViTv2Config, block_specs, pooled_grid


def flops_by_part(cfg: MViTv2Config, image_size: int | None = None) -> dict[str, float]:
  """Forward FLOPs of one example in two parts: 'attention' (q.k and attn.v) and 'other'.

  Fused attention kernels are custom calls, whose FLOPs XLA's cost analysis leaves out:
  the 'attention' part says how much of the count they hold.

  Args:
    cfg: the model config (image or video).
    image_size: input height and width; the config's build size if None.

  Returns:
    {'attention': FLOPs, 'other': FLOPs}.
  """
  attention_macs = 0.0
  size = cfg.input_size if image_size is None else (*cfg.input_size[:-2], image_size, image_size)
  grid = pooled_grid(size, cfg.per_axis(cfg.patch_stride))
  macs = math.prod(grid) * cfg.embed_dim * 3 * math.prod(cfg.per_axis(cfg.patch_kernel))
  prefix = 1 if cfg.cls_token else 0
  pool_taps = math.prod(cfg.per_axis(cfg.pool_kernel))
  specs = block_specs(cfg)
  for spec in specs:
    q_grid, kv_grid = pooled_grid(grid, spec.q_stride), pooled_grid(grid, spec.kv_stride)
    n_in = math.prod(grid) + prefix
    n_q, n_kv = math.prod(q_grid) + prefix, math.prod(kv_grid) + prefix
    dim = spec.att_dim
    macs += n_in * spec.dim_in * 3 * dim  # qkv.
    if cfg.pool_mode == 'conv':
      pooled = (math.prod(q_grid) if spec.pool_q else 0) + 2 * math.prod(kv_grid)
      macs += pooled * dim * pool_taps  # Depthwise pooling.
    attention_macs += 2 * n_q * n_kv * dim  # q.k and attn.v.
    if spec.rel_pos_lens:
      macs += math.prod(q_grid) * sum(kv_grid) * dim  # Decomposed rel-pos, one term per axis.
    macs += n_q * dim * dim  # attn proj.
    widens = spec.dim_in != spec.dim_out
    if widens and cfg.dim_mul_in_att:
      macs += n_in * spec.dim_in * spec.dim_out
    hidden = int(spec.att_dim * cfg.mlp_ratio)
    macs += n_q * (spec.att_dim * hidden + hidden * spec.dim_out)
    if widens and not cfg.dim_mul_in_att:
      macs += n_q * spec.att_dim * spec.dim_out
    grid = q_grid
  macs += specs[-1].dim_out * cfg.num_classes  # Head.
  return {'attention': 2.0 * attention_macs, 'other': 2.0 * macs}
