"""The ResT family: ResT (NeurIPS 2021) and ResTv2 (NeurIPS 2022), as one model definition.

`config.py` (the architecture), `model.py` (EMSA, block, stem, model), `variants.py` (the
named variants), `flops.py` (analytic FLOPs), `checkpoint.py` (the key table of the
official checkpoints, BatchNorm statistics to `batch_stats`).
"""

from mvitv2_jax.models import registry
from mvitv2_jax.models.rest import checkpoint
from mvitv2_jax.models.rest import flops
from mvitv2_jax.models.rest.config import ResTConfig, describe, image_size_rule
from mvitv2_jax.models.rest.model import PA, Attention, Block, ResT, pixel_shuffle
from mvitv2_jax.models.rest.variants import VARIANTS

FAMILY = registry.register(registry.Family(
    name='rest',
    config_class=ResTConfig,
    module_class=ResT,
    variants=VARIANTS,
    checkpoint=checkpoint.TABLE,
    input_shape=lambda cfg: (cfg.image_size, cfg.image_size, 3),
    flops=flops.flops_by_part,
    image_size_rule=image_size_rule,
    describe=describe,
    state_collections=('batch_stats',),
))

__all__ = ['Attention', 'Block', 'FAMILY', 'PA', 'ResT', 'ResTConfig', 'pixel_shuffle']
