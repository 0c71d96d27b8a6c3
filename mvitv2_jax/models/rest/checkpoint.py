"""The ResT key table: the official `wofmanaf/ResT` state dicts <-> Flax variables.

Official keys look like `stage3.0.attn.sr.weight`, `patch_embed_2.norm.running_mean`
(ResT) or `stem.proj.1.weight`, `stage1.0.attn.up.0.weight` (ResTv2). Flax paths mirror
them with `_` for the first dot of a stem or patch embedding and before a block index:
`('stage3_0', 'attn', 'sr', 'kernel')`, `('patch_embed_2_norm', 'mean')` in
`batch_stats`. Released files keep the weights under `model` (training checkpoints, with
the `argparse.Namespace` of the run beside them), `state_dict` or `model_ema`.
"""

import flax.linen as nn

from mvitv2_jax.models import conv_layers
from mvitv2_jax.models import layers
from mvitv2_jax.models import registry

WRAPPER_KEYS = ('model', 'state_dict', 'model_ema')

# Renames shared by ResT and ResTv2, in order: the stem and patch embeddings flatten into
# one level, block indices join their stage, weights become Flax's names.
TO_FLAX = (
    (r'^(stem|patch_embed_\d|patch_\d)\.', r'\1_'),
    (r'\.(\d+)\.', r'_\1.'),
    (r'^stage(\d)\.(\d+)\.', r'stage\1_\2.'),
    (r'\.transform_conv\.weight$', '.transform_conv_kernel'),
    (r'\.transform_conv\.bias$', '.transform_conv_bias'),
    (r'\.running_mean$', '.mean'),
    (r'\.running_var$', '.var'),
    (r'^(stem_proj_[14])\.weight$', r'\1.scale'),  # ResTv2's stem BatchNorms.
    (r'(^|\.)(\w*norm\w*)\.weight$', r'\1\2.scale'),
    (r'\.weight$', '.kernel'),
)
TO_TORCH = (
    (r'^(stem|patch_embed_\d|patch_\d)_', r'\1.'),
    (r'^stage(\d)_(\d+)\.', r'stage\1.\2.'),
    (r'^stem\.proj_(\d)\.', r'stem.proj.\1.'),
    (r'\.up_0\.', '.up.0.'),
    (r'\.transform_conv_kernel$', '.transform_conv.weight'),
    (r'\.transform_conv_bias$', '.transform_conv.bias'),
    (r'\.mean$', '.running_mean'),
    (r'\.var$', '.running_var'),
    (r'\.(kernel|scale)$', '.weight'),
)

TABLE = registry.KeyTable(
    to_flax=TO_FLAX,
    to_torch=TO_TORCH,
    head={('head', 'kernel'): layers.trunc_normal_init, ('head', 'bias'): nn.initializers.zeros},
    collections=(conv_layers.BATCH_NORM_STATS,),
    buffers=((r'\.num_batches_tracked$', conv_layers.check_num_batches_tracked),),
    wrapper_keys=WRAPPER_KEYS,
)
