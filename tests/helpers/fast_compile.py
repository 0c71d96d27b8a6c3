"""The compile settings of a test session: a tiny model's test is mostly its compile.

A session that runs no full-size model compiles with LLVM's optimisation of the
generated code off (`jax_disable_most_optimizations`) and with XLA:CPU's older kernel
emitters, which compile about twice as fast; XLA's own HLO passes still run, and results
change by fp32 rounding only. Subprocesses inherit both through the environment, so the
runs a test compares with each other compile alike. A session that selects the
`fullsize` tier compiles as users do.
"""

import os

import jax

_XLA_FLAG = '--xla_cpu_use_fusion_emitters=false'


def selects_fullsize(markexpr: str) -> bool:
  """Whether a `-m` expression may select `fullsize` tests (read loosely, never missed)."""
  if not markexpr.strip():
    return True  # No expression: every test.
  return 'fullsize' in markexpr.replace('not fullsize', '')


def apply(markexpr: str):
  """Sets the settings for this process and its subprocesses, unless they select fullsize.

  Call before JAX's backend starts: XLA reads XLA_FLAGS once. A setting already in the
  environment is kept.

  Args:
    markexpr: the session's `-m` expression.
  """
  if selects_fullsize(markexpr):
    return
  if 'JAX_DISABLE_MOST_OPTIMIZATIONS' not in os.environ:
    os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
    jax.config.update('jax_disable_most_optimizations', True)
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_cpu_use_fusion_emitters' not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {_XLA_FLAG}'.strip()
