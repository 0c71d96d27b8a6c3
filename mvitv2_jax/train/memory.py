"""Whether a compiled step fits in device memory, checked before the run starts."""

import os

import jax

from mvitv2_jax.train.errors import DoesNotFitError


def _size(n: int) -> str:
  for unit, scale in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if n >= scale:
      return f'{n / scale:.1f} {unit}'
  return f'{n} B'


def device_memory_bytes() -> int | None:
  """Memory one local device may use, or None where it cannot be known.

  Accelerators report their allocator's limit; the CPU devices of a process share
  the host's physical memory.
  """
  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  if device.platform == 'cpu':
    return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') // jax.local_device_count()
  return None


def required_bytes(compiled: jax.stages.Compiled) -> int | None:
  """Peak bytes one device needs to run `compiled`, from XLA's buffer assignment."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
          - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes
          + analysis.generated_code_size_in_bytes)


def check_fits(compiled: jax.stages.Compiled, what: str, remedy: str):
  """Raises `DoesNotFitError` if `compiled` needs more than a device has.

  Args:
    compiled: an ahead-of-time compiled step.
    what: names the step and its batch, e.g. 'the eval step at eval_batch_size 1024'.
    remedy: which config fields to change.
  """
  limit = device_memory_bytes()
  need = required_bytes(compiled)
  if limit is None or need is None or need <= limit:
    return
  raise DoesNotFitError(
      f'{what} needs {_size(need)} per device, more than the {_size(limit)} a '
      f'{jax.local_devices()[0].platform} device has; {remedy}')
