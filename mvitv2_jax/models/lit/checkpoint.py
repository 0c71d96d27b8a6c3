"""The LIT key table: the official `ziplab/LIT` and `ziplab/LITv2` state dicts <-> Flax
variables.

Official keys look like `layers.2.blocks.0.attn.qkv.weight`,
`layers.0.downsample.dconv.conv_offset.weight`, `layers.0.downsample.norm_layer.running_var`
(LIT-S/M/B, LITv2: `layers.2.blocks.0.mlp.dwconv.dwconv.weight`) or
`block3.0.attn.qkv.weight`, `patch_embed2.dconv.weight`, `pos_embed4` (LIT-Ti). Flax paths
join block indices with `_` (`('layers_2', 'blocks_0', 'attn', 'qkv', 'kernel')`);
BatchNorm's running statistics go to `batch_stats`. The `relative_position_index` buffers
must equal the index the model computes (checked, then dropped). Released files keep the
weights under `model` (with the yacs `CfgNode` or `argparse.Namespace` of the run beside
them), `state_dict` or `model_ema`.
"""

import re

import flax.linen as nn
import numpy as np

from mvitv2_jax.models import conv_layers
from mvitv2_jax.models import layers
from mvitv2_jax.models import registry
from mvitv2_jax.models.lit import model

WRAPPER_KEYS = ('model', 'state_dict', 'model_ema')


def check_relative_position_index(key: str, value: np.ndarray, cfg) -> str | None:
  """A stage's index buffer against the one the model computes for its grid."""
  match = re.match(r'layers\.(\d+)\.', key)
  if match is None or cfg.layout != 'swin' or cfg.version != 1:
    return 'no attention of this model has a relative-position index'
  side = cfg.patch_grid // 2**int(match[1])
  want = model.relative_position_index(side, side)
  if value.shape != want.shape:
    return (f'shape {value.shape}, the model builds {want.shape} for its {side}x{side} '
            f'grid at image_size={cfg.image_size}')
  if not np.issubdtype(value.dtype, np.integer) or not np.array_equal(value, want):
    return 'its values differ from the index the model computes'
  return None


TABLE = registry.KeyTable(
    to_flax=(
        (r'\.dwconv\.dwconv\.', '.dwconv.'),  # LITv2's DWConv wraps its conv.
        (r'\.(\d+)\.', r'_\1.'),
        (r'\.running_mean$', '.mean'),
        (r'\.running_var$', '.var'),
        (r'(^|\.)(\w*norm\w*)\.weight$', r'\1\2.scale'),
        (r'\.weight$', '.kernel'),
    ),
    to_torch=(
        (r'\.mlp\.dwconv\.', '.mlp.dwconv.dwconv.'),
        (r'(?<![^.])(layers|blocks|block\d)_(\d+)(?=\.)', r'\1.\2'),
        (r'\.mean$', '.running_mean'),
        (r'\.var$', '.running_var'),
        (r'\.(kernel|scale)$', '.weight'),
    ),
    head={('head', 'kernel'): layers.trunc_normal_init, ('head', 'bias'): nn.initializers.zeros},
    collections=(conv_layers.BATCH_NORM_STATS,),
    buffers=((r'\.num_batches_tracked$', conv_layers.check_num_batches_tracked),
             (r'\.relative_position_index$', check_relative_position_index)),
    wrapper_keys=WRAPPER_KEYS,
)
