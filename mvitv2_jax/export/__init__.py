"""Export for serving: StableHLO through `jax.export`, a TensorFlow SavedModel through jax2tf.

`stablehlo.py` (the program, a symbolic batch, per-platform kernels), `savedmodel.py`
(variables, a uint8 serving signature), `preprocess.py` (the checkpoint's evaluation
preprocessing in TensorFlow), `cli.py` (`mvitv2-export`, `python -m mvitv2_jax.export`).
TensorFlow is imported only for SavedModels.
"""

from mvitv2_jax.export import stablehlo
from mvitv2_jax.export.cli import main

__all__ = ['main', 'stablehlo']
