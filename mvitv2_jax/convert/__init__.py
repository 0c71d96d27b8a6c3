"""PyTorch checkpoints of any family -> Flax params, strictly, without torch.

Files are read by `mvitv2_jax.checkpoint`, which never runs code from them; `engine`
maps a state dict onto a model's params by its family's key table, `loader` reads files
and converted directories for a named variant, `cli` is the `mvitv2-convert` command.
"""

from mvitv2_jax.checkpoint import CheckpointFormatError, read_state_dict
from mvitv2_jax.convert.cli import main
from mvitv2_jax.convert.engine import (ConversionError, as_variables, convert_state_dict,
                                       expected_shapes, expected_variables, guess_variant,
                                       inflate_state_dict, is_variables, params_to_state_dict)
from mvitv2_jax.convert.loader import load_params

__all__ = [
    'CheckpointFormatError', 'ConversionError', 'as_variables', 'convert_state_dict',
    'expected_shapes', 'expected_variables', 'guess_variant', 'inflate_state_dict',
    'is_variables', 'load_params', 'main', 'params_to_state_dict', 'read_state_dict',
]
