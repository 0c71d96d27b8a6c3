"""Checkpoint files -> plain data and NumPy arrays, without torch and without running code.

Knows no model: `read` gives a file's whole object, `read_state_dict` its flat
name -> array dict, for torch's zip and legacy files, safetensors, and plain pickles of
NumPy arrays (detectron2's .pkl), told apart by content (`reader`). Every read stays
within the memory bounds of `limits`; pickles run in `unpickler`, which calls nothing a
file names; the `argparse.Namespace` and yacs `CfgNode` that training checkpoints keep
beside the weights are read as inert `Record`s.
"""

from mvitv2_jax.checkpoint.limits import (MAX_BYTES_ENV, CheckpointFormatError, describe,
                                          max_bytes_setting, open_regular)
from mvitv2_jax.checkpoint.reader import DEFAULT_WRAPPER_KEYS, read, read_state_dict
from mvitv2_jax.checkpoint.torch_pickle import Record

__all__ = [
    'CheckpointFormatError', 'DEFAULT_WRAPPER_KEYS', 'MAX_BYTES_ENV', 'describe',
    'Record', 'max_bytes_setting', 'open_regular', 'read', 'read_state_dict',
]
