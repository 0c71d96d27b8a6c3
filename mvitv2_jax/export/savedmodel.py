"""A model as a TensorFlow SavedModel through jax2tf, serving uint8 images or clips.

Signatures:
  serving_default(images: uint8 [B, H, W, 3] | [B, T, H, W, 3]) -> {'logits', 'probabilities'}
                  the checkpoint's preprocessing (resize, crop, normalise) applied inside;
  logits(inputs: float32 [B, S, S, 3] | [B, T, S, S, 3]) -> {'logits'}, already preprocessed;
  preprocess(images) -> {'inputs'}: the first signature's preprocessing alone.
The batch size is symbolic; the weights are variables (no size limit).
"""

import contextlib
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax.models import layers
from mvitv2_jax.pretrained import table

# XLA's own float32 rational approximation of erf (the decomposition of chlo.erf): p(x^2) x
# / q(x^2) on x clamped to [-4, 4], coefficients from the highest power down.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


def _erf(x: jax.Array) -> jax.Array:
  """erf in plain StableHLO ops, as XLA computes it in float32."""
  y = jnp.clip(x.astype(jnp.float32), -4.0, 4.0)
  y2 = y * y
  p = jnp.full_like(y2, _ERF_P[0])
  for c in _ERF_P[1:]:
    p = p * y2 + np.float32(c)
  q = jnp.full_like(y2, _ERF_Q[0])
  for c in _ERF_Q[1:]:
    q = q * y2 + np.float32(c)
  return jnp.clip(y * p / q, -1.0, 1.0).astype(x.dtype)


def _gelu(x: jax.Array) -> jax.Array:
  return x * (_erf(x * np.asarray(2**-0.5, x.dtype)) + 1) * np.asarray(0.5, x.dtype)


@contextlib.contextmanager
def _erf_spelled_out():
  """Traces GELU's erf as plain ops: jax lowers erf to a StableHLO composite, whose
  decomposition TensorFlow 2.21 cannot refine for a symbolic batch size."""
  original = layers.gelu
  layers.gelu = _gelu
  try:
    yield
  finally:
    layers.gelu = original


def write(out: str, model: nn.Module, params: Any, spec: table.Preprocessing,
          platforms: Sequence[str]):
  """Saves `model` with `params` as a SavedModel in directory `out`.

  Args:
    out: the SavedModel directory.
    model: a model built with `stablehlo.kernel_overrides(platforms)`.
    params: its params, or its variables (`convert.load_params` of a BatchNorm family).
    spec: the preprocessing `serving_default` applies (`spec.crop` = the model's size).
    platforms: of 'cpu', 'cuda', 'tpu'.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  from mvitv2_jax.export import preprocess  # pylint: disable=g-import-not-at-top

  example = models.input_shape(model)  # (S, S, 3) or (T, S, S, 3)
  raw = [None, *example[:-3], None, None, 3]
  with _erf_spelled_out():
    forward = jax2tf.convert(
        lambda v, x: model.apply(v, x), with_gradient=False,
        polymorphic_shapes=[None, '(b, ' + ', '.join(map(str, example)) + ')'],
        native_serialization_platforms=tuple(platforms))
    module = tf.Module()
    module.params = tf.nest.map_structure(lambda a: tf.Variable(a, trainable=False),
                                          convert.as_variables(params))

    @tf.function(input_signature=[tf.TensorSpec(raw, tf.uint8, name='images')],
                 autograph=False)
    def serve(images):
      logits = forward(module.params, preprocess.preprocess(images, spec))
      return {'logits': logits, 'probabilities': tf.nn.softmax(logits)}

    @tf.function(input_signature=[tf.TensorSpec([None, *example], tf.float32, name='inputs')],
                 autograph=False)
    def logits(inputs):
      return {'logits': forward(module.params, inputs)}

    @tf.function(input_signature=[tf.TensorSpec(raw, tf.uint8, name='images')],
                 autograph=False)
    def prepare(images):
      return {'inputs': preprocess.preprocess(images, spec)}

    module.serve, module.logits, module.preprocess = serve, logits, prepare
    tf.saved_model.save(module, out, signatures={
        'serving_default': serve.get_concrete_function(),
        'logits': logits.get_concrete_function(),
        'preprocess': prepare.get_concrete_function()})
