"""Analytic FLOPs of a LIT or LITv2 forward pass: matmuls, convolutions and einsums.

Real FLOPs, 2 per multiply-add (the papers count multiply-adds: LIT-S at 224 is 4.1 GMACs).
The deformable convs count as their offset conv plus a plain conv (the bilinear sampling,
4 multiply-adds per sampled value, is counted as 'other' too). Normalisation, softmax and
activations are not counted.
"""

from mvitv2_jax.models.lit.config import LITConfig


def flops_by_part(cfg: LITConfig, image_size: int | None = None) -> dict[str, float]:
  """Forward FLOPs of one example: 'attention' (q.k and attn.v) and 'other'.

  Args:
    cfg: the model config.
    image_size: input height and width (a multiple of 32); the config's if None.

  Returns:
    {'attention': FLOPs, 'other': FLOPs}.
  """
  size = cfg.image_size if image_size is None else image_size
  dims = cfg.embed_dims
  n = size // 4
  macs = n * n * 3 * dims[0] * 16  # patch embedding
  attention = 0.0
  for stage, (dim, heads, depth) in enumerate(zip(dims, cfg.num_heads, cfg.depths)):
    tokens = n * n + (1 if cfg.layout == 'pvt' and stage == len(dims) - 1 else 0)
    hidden = int(dim * cfg.mlp_ratios[stage])
    block = 2 * tokens * dim * hidden
    if cfg.version == 2:
      block += tokens * hidden * 9  # the MLP's depthwise conv
    if cfg.has_msa[stage]:
      block += tokens * dim * 4 * dim  # q, k, v and the projection (HiLo's split too)
      if cfg.version == 2 and cfg.local_ws[stage] > 1:
        ws = cfg.local_ws[stage]
        head_dim = dim // heads
        l_dim = int(heads * cfg.alpha) * head_dim
        h_dim = dim - l_dim
        pooled = tokens // (ws * ws)
        block -= (tokens - pooled) * dim * 2 * l_dim  # Lo-Fi keys and values: pooled tokens
        attention += depth * (2 * tokens * ws * ws * h_dim + 2 * tokens * pooled * l_dim)
      else:
        attention += depth * 2 * tokens * tokens * dim
    macs += depth * block
    if stage < len(dims) - 1:  # deformable token merging: offsets, sampling, conv
      n //= 2
      macs += n * n * (dim * 4 * 8 + 4 * 4 * dim + dim * 4 * dims[stage + 1])
  macs += dims[-1] * cfg.num_classes
  return {'attention': 2.0 * attention, 'other': 2.0 * macs}
