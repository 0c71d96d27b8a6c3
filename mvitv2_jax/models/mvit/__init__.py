"""The MViT family: MViTv2 for images and videos, and MViTv1, as one model definition.

`config.py` (the architecture and its block plan), `model.py` (attention, block, model),
`rel_pos.py`, `stacking.py` (scanned blocks' params), `variants.py` (the named variants),
`flops.py` (analytic FLOPs), `checkpoint.py` (the key table of official, PySlowFast and
timm checkpoints).
"""

import dataclasses

from mvitv2_jax.models import registry
from mvitv2_jax.models.mvit import checkpoint
from mvitv2_jax.models.mvit import flops
from mvitv2_jax.models.mvit import stacking
from mvitv2_jax.models.mvit.config import (BlockSpec, MViTv2Config, block_specs, describe,
                                           image_size_rule, pooled_grid)
from mvitv2_jax.models.mvit.model import MViTv2, MultiScaleAttention, MultiScaleBlock
from mvitv2_jax.models.mvit.variants import VARIANTS

FAMILY = registry.register(registry.Family(
    name='mvit',
    config_class=MViTv2Config,
    module_class=MViTv2,
    variants=VARIANTS,
    checkpoint=checkpoint.TABLE,
    input_shape=lambda cfg: (*cfg.input_size, 3),
    flops=flops.flops_by_part,
    image_size_rule=image_size_rule,
    describe=describe,
    position_params=('rel_pos_t', 'rel_pos_h', 'rel_pos_w', 'cls_token', 'pos_embed',
                     'pos_embed_spatial', 'pos_embed_temporal', 'pos_embed_class'),
    stacked=stacking.is_stacked,
    unscanned=lambda cfg: dataclasses.replace(cfg, scan_blocks=False),
    stack=stacking.stack,
    unstack=stacking.unstack,
))

__all__ = ['BlockSpec', 'FAMILY', 'MViTv2', 'MViTv2Config', 'MultiScaleAttention',
           'MultiScaleBlock', 'block_specs', 'pooled_grid']
