"""Run-config fields: their dotted names, and the checks of their values.

A check takes a value and returns None when it is usable, else what is allowed
('must be an integer >= 1'). The trainer's own fields, each task's and each model
family's are checked with these (`mvitv2_jax.train.validation`).
"""

import numbers
from typing import Any, Callable, Mapping

import ml_collections

Check = Callable[[Any], str | None]
# `model_overrides` holds a model's own options: checked by building the model, not here.
OPAQUE = 'model_overrides'


def flatten(config: Mapping[str, Any], *, with_sections: bool = False,
            prefix: str = '') -> dict[str, Any]:
  """`{dotted name: value}` of a nested config (a ConfigDict or its JSON as dicts).

  Args:
    config: the config.
    with_sections: also list each section (`optim`) besides its fields (`optim.base_lr`).
    prefix: prepended to every name.

  Returns:
    The flat mapping; `model_overrides` is one value, not descended.
  """
  flat = {}
  for key, value in config.items():
    name = prefix + key
    if hasattr(value, 'items') and key != OPAQUE:
      if with_sections:
        flat[name] = value
      flat.update(flatten(value, with_sections=with_sections, prefix=name + '.'))
    else:
      flat[name] = value
  return flat


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def int_at_least(low: int) -> Check:
  def check(value):
    return None if _is_int(value) and value >= low else f'must be an integer >= {low}'
  return check


def count_or_unset(value) -> str | None:
  if not (_is_int(value) and (value == -1 or value >= 1)):
    return 'must be -1 (unset) or an integer >= 1'
  return None


def real_in(low: float, high: float, *, low_open=False, high_open=False) -> Check:
  interval = f'{"(" if low_open else "["}{low:g}, {high:g}{")" if high_open else "]"}'

  def check(value):
    ok = _is_real(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    return None if ok else f'must be a number in {interval}'
  return check


def real_at_least(low: float, *, low_open=False) -> Check:
  def check(value):
    if not (_is_real(value) and (value > low if low_open else value >= low)):
      return f'must be a number {">" if low_open else ">="} {low:g}'
    return None
  return check


def one_of(choices) -> Check:
  def check(value):
    return None if value in choices else f'must be one of {", ".join(map(repr, choices))}'
  return check


def boolean(value) -> str | None:
  return None if isinstance(value, bool) else 'must be True or False'


def string(value) -> str | None:
  return None if isinstance(value, str) else 'must be a string'


def name(value) -> str | None:
  return None if isinstance(value, str) and value else 'must be a non-empty string'


def section(value) -> str | None:
  return None if isinstance(value, ml_collections.ConfigDict) else 'must be a ConfigDict'
