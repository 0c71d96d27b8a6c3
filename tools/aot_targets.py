"""Named accelerator targets as compile-only devices, with each chip's memory and peak.

A target is a TPU slice (`v5e-8`, `v4-32`, `v5p-8`, `v6e-256`: Cloud TPU names, where
the number counts TensorCores on v4/v5p and chips on v5e/v6e), N GPUs of one kind
(`h100x8`, `h200x16`, `a100x8`), or this host's own CPU devices (`cpu-1`: its compile
times). `devices(target)` builds TPU and GPU targets as compile-only devices through
`jax.experimental.topologies`, with no accelerator or driver on this host; they need the
optional packages of requirements-aot.txt (libtpu, the CUDA plugin, cuDNN).
"""

import contextlib
import dataclasses
import importlib.util
import math
import os
import re
from unittest import mock

GiB = 2**30
_GPU_TARGETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'gpu_targets')
# Hosts of a GPU target hold this many GPUs each (the last one may hold fewer).
_GPUS_PER_HOST = 8
# The module each platform's compile-only devices come from.
_PACKAGES = {'tpu': 'libtpu', 'cuda': 'jax_cuda12_plugin'}


@dataclasses.dataclass(frozen=True)
class Chip:
  """One kind of accelerator chip (a TPU chip, or a GPU)."""
  name: str
  platform: str  # 'tpu' or 'cuda'.
  memory_bytes: int  # HBM per chip.
  peak_bf16_tflops: float  # Dense bf16 matmul peak per chip.
  device_kinds: tuple[str, ...]  # `jax.Device.device_kind` of this chip.
  cores_per_chip: int = 1  # TensorCores per chip, as Cloud TPU names count them.
  topology_prefix: str = ''  # TPU: libtpu's topology name prefix.
  gpu_target_config: str = ''  # GPU: the GpuTargetConfigProto file in gpu_targets/.


CHIPS = {
    'v4': Chip('TPU v4', 'tpu', 32 * GiB, 275.0, ('TPU v4',), cores_per_chip=2,
               topology_prefix='v4'),
    'v5e': Chip('TPU v5e', 'tpu', 16 * GiB, 197.0, ('TPU v5 lite',), topology_prefix='v5e'),
    'v5p': Chip('TPU v5p', 'tpu', 95 * GiB, 459.0, ('TPU v5', 'TPU v5p'), cores_per_chip=2,
                topology_prefix='v5p'),
    'v6e': Chip('TPU v6e', 'tpu', 32 * GiB, 918.0, ('TPU v6 lite', 'TPU v6e'),
                topology_prefix='v6e'),
    'h100': Chip('NVIDIA H100 80GB HBM3', 'cuda', 84_942_979_072, 989.0,
                 ('NVIDIA H100 80GB HBM3',), gpu_target_config='h100.txtpb'),
    'h200': Chip('NVIDIA H200 141GB HBM3e', 'cuda', 151_397_597_184, 989.0,
                 ('NVIDIA H200', 'NVIDIA H200 141GB HBM3e'), gpu_target_config='h200.txtpb'),
    'a100': Chip('NVIDIA A100-SXM4-80GB', 'cuda', 85_100_068_864, 312.0,
                 ('NVIDIA A100-SXM4-80GB', 'NVIDIA A100 80GB PCIe'),
                 gpu_target_config='a100.txtpb'),
    # This host, for its compile times: its memory is the RAM, it has no bf16 peak.
    'cpu': Chip('host CPU', 'cpu', os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'),
                0.0, ()),
}


def chip_of_device_kind(device_kind: str) -> Chip | None:
  """The chip a `jax.Device.device_kind` names, or None for other devices (CPUs)."""
  for chip in CHIPS.values():
    if device_kind in chip.device_kinds:
      return chip
  return None


@dataclasses.dataclass(frozen=True)
class Target:
  """A named slice or GPU group."""
  name: str
  chip: Chip
  num_chips: int
  topology: str  # TPU: libtpu's topology name ('v5e:2x4'); GPU: 'slices x hosts x GPUs'.


def _tpu_topology(prefix: str, chips: int) -> str:
  """The chip grid of a slice as Cloud TPU shapes it: 2-D for v5e/v6e, 3-D for v4/v5p."""
  if chips < 4:
    # libtpu lays out whole hosts of 2x2 chips.
    raise ValueError(f'{prefix} targets have at least 4 chips (one host), not {chips}.')
  if prefix in ('v5e', 'v6e'):
    x = 2**(int(math.log2(chips)) // 2)
    return f'{prefix}:{x}x{chips // x}'
  # 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8 ...: the smallest axis doubles, z first.
  dims = [2, 2, 1]
  while math.prod(dims) < chips:
    axis = max(i for i in range(3) if dims[i] == min(dims))
    dims[axis] *= 2
  return f'{prefix}:{dims[0]}x{dims[1]}x{dims[2]}'


def parse_target(name: str) -> Target:
  """`v5e-8`, `v4-32`, `h100x8` ... as a `Target`; a clear error for anything else.

  Args:
    name: TPU `<generation>-<cores or chips>` (Cloud TPU's naming) or GPU `<kind>x<count>`.

  Returns:
    The target, its chip and its topology.
  """
  known = ', '.join(f'{k}xN' if c.platform == 'cuda' else f'{k}-N' for k, c in CHIPS.items())
  tpu = re.fullmatch(r'(v4|v5e|v5p|v6e)-(\d+)', name)
  gpu = re.fullmatch(r'(h100|h200|a100)x(\d+)', name)
  cpu = re.fullmatch(r'cpu-(\d+)', name)
  if tpu:
    chip = CHIPS[tpu.group(1)]
    count = int(tpu.group(2))
    if count % chip.cores_per_chip or count < chip.cores_per_chip:
      raise ValueError(f'{name}: {tpu.group(1)} counts TensorCores, '
                       f'{chip.cores_per_chip} per chip.')
    chips = count // chip.cores_per_chip
    if chips & (chips - 1):
      raise ValueError(f'{name}: the chip count must be a power of two, not {chips}.')
    return Target(name, chip, chips, _tpu_topology(chip.topology_prefix, chips))
  if gpu:
    chip, count = CHIPS[gpu.group(1)], int(gpu.group(2))
    if count < 1:
      raise ValueError(f'{name}: at least one GPU.')
    hosts = -(-count // _GPUS_PER_HOST)
    if count > _GPUS_PER_HOST and count % _GPUS_PER_HOST:
      raise ValueError(f'{name}: several hosts hold {_GPUS_PER_HOST} GPUs each.')
    return Target(name, chip, count, f'1x{hosts}x{min(count, _GPUS_PER_HOST)}')
  if cpu and int(cpu.group(1)) >= 1:
    return Target(name, CHIPS['cpu'], int(cpu.group(1)), 'host')
  raise ValueError(f'Unknown target {name!r}; expected one of {known} (e.g. v5e-8, h100x8).')


def gpu_target_config(chip: Chip) -> str:
  """The GpuTargetConfigProto text of a GPU chip."""
  with open(os.path.join(_GPU_TARGETS_DIR, chip.gpu_target_config)) as f:
    return f.read()


def devices(target: Target) -> list:
  """The compile-only devices of `target`, in topology order.

  Args:
    target: from `parse_target`.

  Returns:
    `num_chips` devices, one per chip (TPU megacore chips are one device).

  Raises:
    RuntimeError: the target's optional package is not installed, or the host has fewer
      CPU devices than a CPU target names.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  if target.chip.platform == 'cpu':
    found = jax.devices('cpu')
    if len(found) < target.num_chips:
      raise RuntimeError(f'{target.name}: this host has {len(found)} CPU devices; run with '
                         f'XLA_FLAGS=--xla_force_host_platform_device_count={target.num_chips}.')
    return found[:target.num_chips]
  package = _PACKAGES[target.chip.platform]
  if importlib.util.find_spec(package) is None:
    raise RuntimeError(f'{target.name} needs {package}: pip install -r requirements-aot.txt')
  if target.chip.platform == 'tpu':
    _load_tpu_compiler()
    # v4 and v5p chips hold two TensorCores; megacore runs them as one device.
    options = {'chip_config_name': 'megacore'} if target.chip.cores_per_chip > 1 else {}
    topology = topologies.get_topology_desc(
        topology_name=target.topology, platform='tpu', **options)
  else:
    topology = topologies.get_topology_desc(
        platform='cuda', target_config=gpu_target_config(target.chip),
        topology=target.topology)
  found = list(topology.devices)
  if len(found) != target.num_chips:
    raise RuntimeError(f'{target.name}: {len(found)} devices, expected {target.num_chips}.')
  return found


def _load_tpu_compiler():
  """libtpu as the PJRT plugin it is on a TPU host, with the callbacks plugins get there.

  A topology made on a host without TPUs loads libtpu without them, and the compiler then
  lacks the custom partitioning rules (`jax.experimental.custom_partitioning`) the fused
  attention kernels carry. jax keeps the callbacks in a private list: a tool may reach it.
  """
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  from jax._src.lib import xla_client  # pylint: disable=g-import-not-at-top
  if xla_client.pjrt_plugin_loaded('tpu'):
    return
  c_api = xla_client.load_pjrt_plugin_dynamically('tpu', xla_bridge.get_tpu_library_path())
  for callback in xla_bridge._plugin_callbacks:  # pylint: disable=protected-access
    callback(c_api=c_api)


@contextlib.contextmanager
def cudnn_checks_read(devices_: list):
  """Within: jax's cuDNN attention checks take the compute capability of `devices_`.

  They read the default backend's GPUs, and here the default backend is the CPU: they
  would judge every GPU target as pre-Hopper (head dims up to 128, not 256) and send
  attention sites cuDNN runs on the real GPU to the XLA fallback.
  """
  capabilities = {getattr(d, 'compute_capability', None) for d in devices_}
  if len(capabilities) != 1 or None in capabilities:
    yield  # Not one kind of GPU: nothing to read.
    return
  from jax._src.cudnn import fused_attention_stablehlo as cudnn  # pylint: disable=g-import-not-at-top
  version = lambda text: tuple(int(x) for x in text.split('.'))
  current = version(capabilities.pop())
  with mock.patch.object(cudnn, 'check_compute_capability', lambda c: current >= version(c)), \
       mock.patch.object(cudnn, 'is_cuda_compute_capability_equal',
                         lambda c: current == version(c)):
    yield
