"""The weight and input recipes of the ResT and LIT goldens (NumPy only; tests and generators).

Every float tensor of an official state dict is drawn from a generator seeded by its key,
so a test rebuilds the weights bit for bit from the key list alone, as
`tests/helpers/golden.recipe` does for MViT. The scales make every branch matter (see
rest/README.md and lit/README.md): the attention is peaked, BatchNorm's statistics are
far from (0, 1), DTM's offsets are 1-3 px and the classifier spreads the logits.
"""

import math
import zlib

import numpy as np

SEED = 2112
INPUT_SEED = 1526

# Per family, gains g of the fan-in rule g / sqrt(fan_in) * z, by key suffix (first match
# wins; default 1). The classifier spreads the logits. ResT: small q, kv and attention
# projections keep its post-softmax instance norm in the regime where its epsilon, not the
# map's spread, sets the scale, and the attention branch from swamping the residual stream:
# the original's own fp32-vs-fp64 spread stays about 2e-5 (with all gains 1, 2.4e-4 on
# ResT-Lite). LIT: offset convs of gain 1 give DTM offsets of 1-3 px; the last merging
# reads the residual stream after the deep stage 3, which is larger, so its gain is 0.25
# (with 1, LIT-B's offsets there reached 6 px at the 90th percentile and amplified rounding
# to 1.2e-4 in the logits of a float32 port).
GAINS = {
    'rest': (('head.weight', 6.0), ('attn.q.weight', 0.3), ('attn.kv.weight', 0.3),
             ('attn.proj.weight', 0.1)),
    'lit': (('head.weight', 6.0), ('layers.2.downsample.dconv.conv_offset.weight', 0.25),
            ('patch_embed4.dconv.conv_offset.weight', 0.25), ('conv_offset.weight', 1.0)),
}


def recipe(key: str, shape, family: str) -> np.ndarray:
  """The float32 value of an official key of this shape (float64 math, one cast at the end).

  Args:
    key: the official state-dict key.
    shape: its PyTorch shape.
    family: 'rest' or 'lit' (their gains, `GAINS`).
  """
  rng = np.random.default_rng([SEED, zlib.crc32(key.encode('utf-8'))])
  z = rng.standard_normal(tuple(shape))
  name = key.rsplit('.', 1)[-1]
  if name == 'running_mean':
    w = 0.2 * z
  elif name == 'running_var':
    w = np.exp(0.5 * z)
  elif name == 'relative_position_bias_table':
    w = 0.5 * z
  elif name.startswith('pos_embed') or name == 'cls_token':
    w = 0.5 * z
  elif key.endswith('conv_offset.bias'):
    w = 1.0 * z  # Offsets of about a pixel before the conv's own share.
  elif name == 'bias':
    w = 0.05 * z
  elif len(shape) == 1:
    w = 1.0 + 0.1 * z
  else:
    gain = next((g for suffix, g in GAINS[family] if key.endswith(suffix)), 1.0)
    w = (gain / math.sqrt(int(np.prod(shape[1:])))) * z
  return w.astype(np.float32)


def images(size: int, batch: int = 2) -> np.ndarray:
  """The golden input: NHWC float32 normal noise (already "normalised images")."""
  return np.random.default_rng([INPUT_SEED, size]).standard_normal(
      (batch, size, size, 3)).astype(np.float32)
