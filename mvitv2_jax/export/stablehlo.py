"""A model with its weights as a `jax.export` artifact: StableHLO, a symbolic batch size.

  exported = stablehlo.export(model, params, ('cpu', 'cuda', 'tpu'))
  restored = jax.export.deserialize(exported.serialize())
  logits = restored.call(inputs)                 # float32 [B, ...] preprocessed, any B

The weights are constants of the program. Kernels: one platform gets its own (as
`mvitv2_jax.ops` picks them), except TPU's Pallas attention, which cannot take a symbolic
batch; several platforms share the portable XLA kernels, so the weights are stored once.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax.ops import platform as ops_platform

PLATFORMS = ('cpu', 'cuda', 'tpu')
# The most a serialized artifact can hold (a flatbuffer), less room for the program.
MAX_WEIGHT_BYTES = (2 << 30) - (64 << 20)


def kernel_overrides(platforms: Sequence[str]) -> dict[str, str]:
  """The `attention_impl` and `pool_impl` of a program exported for `platforms`."""
  if len(platforms) > 1:
    # lax.platform_dependent branches would each hold a copy of the weights.
    return {'attention_impl': 'xla', 'pool_impl': 'conv'}
  platform = platforms[0]
  attention = ops_platform.resolve('attention', 'auto', platform)
  return {'attention_impl': 'xla' if attention == 'pallas' else attention,
          'pool_impl': ops_platform.resolve('pool', 'auto', platform)}


def input_spec(model: nn.Module) -> jax.ShapeDtypeStruct:
  """float32 [b, *example shape] with a symbolic batch size b."""
  batch, = jax.export.symbolic_shape('b')
  return jax.ShapeDtypeStruct((batch, *models.input_shape(model)), jnp.float32)


def export(model: nn.Module, params: Any,
           platforms: Sequence[str] = PLATFORMS) -> jax.export.Exported:
  """The forward pass of `model` with `params` for `platforms`, any batch size.

  Args:
    model: a model built with `kernel_overrides(platforms)`.
    params: its params, or its variables (`convert.load_params` of a BatchNorm family).
    platforms: of 'cpu', 'cuda', 'tpu'.

  Returns:
    The exported program: float32 preprocessed inputs -> float32 logits [B, classes].

  Raises:
    ValueError: the weights are too large for one serialized artifact.
  """
  nbytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
  if nbytes > MAX_WEIGHT_BYTES:
    raise ValueError(f'{nbytes / 2**30:.2f} GiB of weights do not fit a serialized StableHLO '
                     'artifact (2 GiB); export a SavedModel instead (--format savedmodel)')
  variables = convert.as_variables(params)
  forward = jax.jit(lambda x: model.apply(variables, x))
  return jax.export.export(forward, platforms=tuple(platforms))(input_spec(model))
