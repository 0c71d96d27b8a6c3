"""PyTorch MViTv2 checkpoints (official, timm) -> Flax params, without torch.

Files are read by `mvitv2_jax.checkpoint`, which never runs code from them; `keys` maps
names and layouts, `loader` converts strictly, `cli` is the `mvitv2-convert` command.
"""

from mvitv2_jax.checkpoint import CheckpointFormatError
from mvitv2_jax.convert.cli import main
from mvitv2_jax.convert.loader import (ConversionError, convert_state_dict, expected_shapes,
                                       guess_variant, image_size_multiple, inflate_state_dict,
                                       load_params, params_to_state_dict, read_state_dict)

__all__ = [
    'CheckpointFormatError', 'ConversionError', 'convert_state_dict', 'expected_shapes',
    'guess_variant', 'image_size_multiple', 'inflate_state_dict', 'load_params', 'main',
    'params_to_state_dict',
    'read_state_dict',
]
