"""host_memory: a worker thread's freed step-sized block stays mapped for reuse."""

import subprocess
import sys
import textwrap

import pytest

from tests.helpers import training
from tools import host_memory

# Page faults of the third 256 MB block a worker thread allocates, touches and
# frees, as XLA:CPU does with a step's temporaries. The settings must precede the
# process's threads, hence a fresh interpreter per setting.
_PROBE = textwrap.dedent("""
    import ctypes, resource, sys, threading
    from tools import host_memory
    if sys.argv[1] == 'reuse':
      assert host_memory.reuse_freed_memory()
    libc = ctypes.CDLL('libc.so.6')
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size, faults = 256 << 20, []
    def step():
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      block = libc.malloc(size)
      ctypes.memset(block, 1, size)
      libc.free(block)
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    for _ in range(3):
      worker = threading.Thread(target=step)
      worker.start()
      worker.join()
    print(faults[-1])
""")


def _faults_per_step(setting: str) -> float:
  env = {k: v for k, v in training.subprocess_env().items() if not k.startswith('MALLOC_')}
  out = subprocess.run([sys.executable, '-c', _PROBE, setting], check=True,
                       capture_output=True, text=True, env=env)
  return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt')
def test_reused_memory_stops_page_faults():
  pages = (256 << 20) // 4096
  # By default glibc maps the block afresh each time: a fault per page...
  assert _faults_per_step('default') >= pages
  # ...with the settings it stays mapped and is reused.
  assert _faults_per_step('reuse') < pages // 100


def test_runs_on_cpu_here(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert host_memory.runs_on_cpu()
