"""A test variant in the model registry, for the commands that take registered names only."""

import pytest

from mvitv2_jax import models
from mvitv2_jax.models import registry


def register(mp: pytest.MonkeyPatch, name: str, fields: dict, family: str = 'mvit'):
  """Registers variant `name` of `family` with config `fields` until `mp` is undone."""
  owner = next(f for f in models.families() if f.name == family)
  mp.setitem(owner.variants, name, fields)
  mp.setitem(registry._BY_VARIANT, name, owner)  # pylint: disable=protected-access
