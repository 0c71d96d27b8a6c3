"""The LIT family: LIT (AAAI 2022; LIT-Ti, LIT-S/M/B) and LITv2 (NeurIPS 2022), as one
model definition.

`config.py` (the architecture), `model.py` (deformable token merging, the attentions,
block, stage, model), `variants.py` (the named variants), `flops.py` (analytic FLOPs),
`checkpoint.py` (the key table of the official checkpoints, BatchNorm statistics to
`batch_stats`, index buffers checked).
"""

from mvitv2_jax.models import registry
from mvitv2_jax.models.lit import checkpoint
from mvitv2_jax.models.lit import flops
from mvitv2_jax.models.lit.config import LITConfig, describe, image_size_rule
from mvitv2_jax.models.lit.model import (LIT, Block, DeformableTokenMerging, DeformConv, HiLo,
                                         RelPosAttention, relative_position_index)
from mvitv2_jax.models.lit.variants import VARIANTS

FAMILY = registry.register(registry.Family(
    name='lit',
    config_class=LITConfig,
    module_class=LIT,
    variants=VARIANTS,
    checkpoint=checkpoint.TABLE,
    input_shape=lambda cfg: (cfg.image_size, cfg.image_size, 3),
    flops=flops.flops_by_part,
    image_size_rule=image_size_rule,
    describe=describe,
    state_collections=('batch_stats',),
    # OFFSET_LR_MULTI / dconv_lr_ratio: the offset convs' weight (not their bias, a 1-D
    # param of the no-decay group) at 0.01x.
    lr_multipliers=((r'conv_offset/kernel$', 0.01),),
    position_params=('relative_position_bias_table', 'pos_embed1', 'pos_embed2', 'pos_embed3',
                     'pos_embed4', 'cls_token'),
))

__all__ = ['Block', 'DeformConv', 'DeformableTokenMerging', 'FAMILY', 'HiLo', 'LIT',
           'LITConfig', 'RelPosAttention', 'relative_position_index']
