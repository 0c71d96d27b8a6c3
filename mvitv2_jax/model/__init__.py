"""The MViT model: config and block plan, layers, modules, named variants."""

from mvitv2_jax.model.config import BlockSpec, MViTv2Config, block_specs, pooled_grid
from mvitv2_jax.model.layers import trunc_normal_init
from mvitv2_jax.model.mvit import MViTv2, MultiScaleAttention, MultiScaleBlock
from mvitv2_jax.model.variants import create_model, model_names, variant_config

__all__ = [
    'BlockSpec', 'MViTv2', 'MViTv2Config', 'MultiScaleAttention', 'MultiScaleBlock',
    'block_specs', 'create_model', 'model_names', 'pooled_grid', 'trunc_normal_init',
    'variant_config',
]
