"""PyTorch MViTv2 checkpoints (official, timm) -> Flax params, without torch.

`torch_reader` reads the files without running code from them (its pickles run in
`unpickler`, safetensors in `safetensors_reader`, all within the bounds of `limits`), `keys`
maps names and layouts, `loader` converts strictly, `cli` is the `mvitv2-convert` command.
"""

from mvitv2_jax.convert.cli import main
from mvitv2_jax.convert.limits import CheckpointFormatError
from mvitv2_jax.convert.loader import (ConversionError, convert_state_dict, expected_shapes,
                                       guess_variant, image_size_multiple, inflate_state_dict,
                                       load_params, params_to_state_dict, read_state_dict)

__all__ = [
    'CheckpointFormatError', 'ConversionError', 'convert_state_dict', 'expected_shapes',
    'guess_variant', 'image_size_multiple', 'inflate_state_dict', 'load_params', 'main',
    'params_to_state_dict',
    'read_state_dict',
]
