"""PyTorch MViTv2 checkpoints (official, timm) -> Flax params, without torch.

`torch_reader` reads the files without running code from them, `keys` maps names and
layouts, `loader` converts strictly, `cli` is the `mvitv2-convert` command.
"""

from mvitv2_jax.convert.cli import main
from mvitv2_jax.convert.loader import (ConversionError, convert_state_dict, expected_shapes,
                                       guess_variant, inflate_state_dict, load_params,
                                       params_to_state_dict, read_state_dict)
from mvitv2_jax.convert.torch_reader import CheckpointFormatError

__all__ = [
    'CheckpointFormatError', 'ConversionError', 'convert_state_dict', 'expected_shapes',
    'guess_variant', 'inflate_state_dict', 'load_params', 'main', 'params_to_state_dict',
    'read_state_dict',
]
