"""`from mvitv2_jax import models`: the model API (see `mvitv2_jax.model`)."""

from mvitv2_jax.model import *  # pylint: disable=wildcard-import,unused-wildcard-import
from mvitv2_jax.model import __all__  # pylint: disable=unused-import
