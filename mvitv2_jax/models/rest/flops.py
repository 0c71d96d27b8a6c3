"""Analytic FLOPs of a ResT or ResTv2 forward pass: matmuls, convolutions and einsums.

Real FLOPs, 2 per multiply-add (the papers' "FLOPs" count multiply-adds: ResTv2-T at 224 is
about 4.1 GMACs). Normalisation, softmax, activations, the sigmoid gate and the pixel
shuffle are not counted.
"""

from mvitv2_jax.models.rest.config import ResTConfig


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
  return (n + 2 * padding - kernel) // stride + 1


def flops_by_part(cfg: ResTConfig, image_size: int | None = None) -> dict[str, float]:
  """Forward FLOPs of one example: 'attention' (q.k and attn.v) and 'other'.

  Args:
    cfg: the model config.
    image_size: input height and width (a multiple of 32); the config's if None.

  Returns:
    {'attention': FLOPs, 'other': FLOPs}.
  """
  size = cfg.image_size if image_size is None else image_size
  dims = cfg.embed_dims
  macs = attention = 0.0
  hidden = dims[0] // 2
  n = _conv_out(size, 3, 2, 1)
  macs += n * n * 3 * hidden * 9  # stem conv 1
  if cfg.version == 1:
    macs += n * n * hidden * hidden * 9  # stem conv 2 (stride 1)
    n = _conv_out(n, 3, 2, 1)
    macs += n * n * hidden * dims[0] * 9  # stem conv 3
  else:
    n = _conv_out(n, 3, 2, 1)
    macs += n * n * hidden * dims[0] * 9 + n * n * dims[0] * dims[0]  # conv 3x3, conv 1x1
  macs += n * n * dims[0] * 9  # PA
  for stage, (dim, heads, depth, sr) in enumerate(zip(dims, cfg.num_heads, cfg.depths,
                                                      cfg.sr_ratios)):
    if stage:
      n = _conv_out(n, 3, 2, 1)
      macs += n * n * dims[stage - 1] * dim * 9 + n * n * dim * 9  # patch conv, PA
    tokens = n * n
    kv = _conv_out(n, sr + 1, sr, sr // 2) ** 2 if sr > 1 else tokens
    block = tokens * dim * dim * 2  # q, proj
    block += kv * dim * 2 * dim  # kv
    if sr > 1:
      block += kv * dim * (sr + 1) ** 2  # sr depthwise conv
    if cfg.version == 1 and cfg.apply_transform and heads > 1:
      block += tokens * kv * heads * heads  # 1x1 conv over heads
    if cfg.version == 2:
      block += kv * dim * sr * sr * 9  # up: grouped 3x3 conv to sr^2 * dim channels
    block += 2 * tokens * dim * int(dim * cfg.mlp_ratio)  # MLP
    macs += depth * block
    attention += depth * 2 * tokens * kv * dim  # q.k and attn.v
  macs += dims[-1] * cfg.num_classes
  return {'attention': 2.0 * attention, 'other': 2.0 * macs}
