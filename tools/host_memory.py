"""Opt-in glibc malloc settings that let XLA:CPU reuse its step memory.

XLA:CPU allocates all temporaries of one executable run as a single block, several GB
for a train step. glibc serves a block that large from a fresh `mmap` (a worker
thread's arena cannot hold it) and unmaps it on `free`, so every step the kernel maps
and zero-fills it anew. With one arena, no `mmap` and no trimming, the block stays
mapped and later steps reuse it. The settings hold for the whole process, hence
opt-in: `main.py --reuse_host_memory`, `python -m tools.benchmark --reuse_host_memory`.
What they save is in docs/kernels.md ("Host memory").
"""

import ctypes
import importlib.metadata
import importlib.util
import os
import sys

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def runs_on_cpu() -> bool:
  """Whether JAX will run on the host CPU: no accelerator plugin, or JAX_PLATFORMS=cpu.

  Decided without initialising a JAX backend, which would start the threads whose
  allocations `reuse_freed_memory` has to precede.
  """
  if os.environ.get('JAX_PLATFORMS', '').strip().lower() == 'cpu':
    return True
  plugins = (importlib.util.find_spec('jax_plugins') is not None
             or importlib.util.find_spec('libtpu') is not None
             or any(True for _ in importlib.metadata.entry_points(group='jax_plugins')))
  return not plugins


def reuse_freed_memory() -> bool:
  """Makes glibc keep freed memory for reuse (one arena, no mmap, no trimming).

  Call it early, before JAX runs anything: threads that already allocated keep
  their own arenas. Only worth it where XLA computes on the CPU; with an
  accelerator the step's temporaries live in device memory, and one arena could
  slow the input pipeline's threads.

  Returns:
    True if the settings were applied (Linux with glibc), False otherwise.
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    libc = ctypes.CDLL('libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # Not glibc (e.g. musl).
    return False
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
  return all(mallopt(param, value) == 1 for param, value in settings)
