"""Test setup: the repo root on sys.path (for `configs`), no heavy imports.

The pytest process keeps jax's default single CPU device; multi-device checks
run in subprocesses (see `multidevice_check.py`).
"""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

# Many tests compile the same tiny programs, in-process and in subprocesses.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', '/tmp/mvitv2_jax_test_jit_cache')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
