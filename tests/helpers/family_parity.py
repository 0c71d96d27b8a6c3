"""Parity checks shared by the ResT and LIT tests: full-size goldens through the public
converter, the tiny official files, and single modules against the per-op goldens."""

import jax
import numpy as np
from flax import traverse_util

from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax.convert import engine
from tests.helpers import family_golden

SIZES = (224, 256)


def check_full_size(name: str, tmp_path, fixed_size: bool) -> dict[int, float]:
  """Max |logit diff| against the original at both sizes, the weights loaded by load_params
  from an official-layout file (a model built for each size where its tables depend on it)."""
  errors = {}
  variables = None
  for size in SIZES:
    overrides = {'image_size': size} if fixed_size else {}
    if variables is None or fixed_size:
      path = tmp_path / f'{name}_{size}.safetensors'
      family_golden.write_safetensors(path, family_golden.state_dict(name, size))
      variables = convert.load_params(str(path), name, **overrides)
    model = models.create_model(name, **overrides)
    logits = np.asarray(jax.jit(model.apply)(variables, family_golden.images(name, size)))
    errors[size] = float(np.abs(logits - family_golden.outputs(name)[f'logits_{size}']).max())
    print(f'{name} at {size}: max |logit diff| = {errors[size]:.2e}')
  return errors


def module_variables(table, state: dict[str, np.ndarray], prefix: str) -> dict:
  """The Flax variables of one module from its official state dict (keys under `prefix.`)."""
  collections = {}
  for key, value in state.items():
    if not key.startswith(prefix + '.') or key.endswith(('num_batches_tracked',
                                                         'relative_position_index')):
      continue
    source = 'm.' + key[len(prefix) + 1:]
    collection = engine._collection(table, source)  # pylint: disable=protected-access
    path = engine.flax_path(table, source)[1:]
    collections.setdefault(collection, {})[path] = engine.to_flax_layout(source, value)
  return {c: traverse_util.unflatten_dict(v) for c, v in collections.items()}
