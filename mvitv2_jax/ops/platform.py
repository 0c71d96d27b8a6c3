"""The one rule that picks a kernel per platform.

The platform is that of the devices the program runs on, never `jax.default_backend()`:
- under a mesh (`jax.set_mesh`, as the trainer and the compile tool run), the mesh's
  devices name it while tracing, and only that platform's kernel is traced;
- without one, both kernels are staged out and the choice is made when the program is
  lowered, for the platform it is lowered for (`jax.lax.platform_dependent`).
Either way a program traced on a CPU host and compiled for TPU or GPU gets the TPU or
GPU kernels. An explicit kernel name (e.g. `pool_impl='conv'`) bypasses the rule.
"""

from typing import Any, Callable, Mapping

import jax

# What 'auto' resolves to, per op and platform ('default': every platform not named).
AUTO_KERNELS = {
    'pool': {'cpu': 'slices', 'default': 'conv'},
    'attention': {'cpu': 'einsum', 'tpu': 'pallas', 'cuda': 'cudnn', 'default': 'xla'},
    # TPU gathers of many C-wide rows are slow; the one-hot matmul runs on the MXU.
    'deform_conv': {'cpu': 'gather', 'tpu': 'one_hot', 'default': 'gather'},
}


# XLA compiler options per platform, for the programs the trainer compiles.
COMPILER_OPTIONS = {
    # XLA's Triton GEMM emitter finds no tiling for some of MViTv2-L's weight-gradient
    # matmuls (bf16[3456,1152]) and fails the compile; cuBLAS runs them instead.
    'cuda': {'xla_gpu_enable_triton_gemm': False},
}


def device_platform(device) -> str:
  """The kernels' name for a (possibly abstract) device's platform: 'cpu', 'tpu', 'cuda'."""
  # Devices name CUDA and ROCm GPUs both 'gpu'; the kernels are CUDA's (ROCm falls back).
  return 'cuda' if device.platform == 'gpu' else device.platform


def mesh_platform() -> str | None:
  """The platform of the mesh in context, or None without one."""
  device = getattr(jax.sharding.get_abstract_mesh(), 'abstract_device', None)
  return None if device is None else device_platform(device)


def compiler_options(mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """`COMPILER_OPTIONS` for programs over `mesh`'s devices (a copy: callers add theirs)."""
  return dict(COMPILER_OPTIONS.get(device_platform(mesh.devices.flat[0]), {}))


def resolve(op: str, impl: str, platform: str) -> str:
  """The kernel `impl` ('auto' or a kernel name) of `op` runs on `platform` ('cpu', 'tpu', ...)."""
  if impl != 'auto':
    return impl
  rule = AUTO_KERNELS[op]
  return rule.get(platform, rule['default'])


def dispatch(op: str, impl: str, kernels: Mapping[str, Callable[..., Any]], *args: Any) -> Any:
  """Runs kernel `impl` of `op` on `args`, 'auto' per platform (see the module docstring).

  Args:
    op: a key of `AUTO_KERNELS`.
    impl: 'auto' or one of `kernels`.
    kernels: kernel name -> function of `args` (static options bound already).
    *args: arrays (pytrees) passed to the kernel.

  Returns:
    The kernel's output.
  """
  if impl == 'auto' and (platform := mesh_platform()) is not None:
    impl = resolve(op, impl, platform)
  if impl != 'auto':
    if impl not in kernels:
      raise ValueError(f'Unknown {op} kernel {impl!r}; expected one of '
                       f'{", ".join(["auto", *kernels])}.')
    return kernels[impl](*args)
  rule = AUTO_KERNELS[op]
  per_platform = {p: kernels[k] for p, k in rule.items() if p != 'default'}
  return jax.lax.platform_dependent(*args, default=kernels[rule['default']], **per_platform)


def on_cpu(*args: Any, cpu: Callable[..., Any], default: Callable[..., Any]) -> Any:
  """`cpu(*args)` in programs for XLA:CPU, `default(*args)` elsewhere (same rule)."""
  platform = mesh_platform()
  if platform is not None:
    return (cpu if platform == 'cpu' else default)(*args)
  return jax.lax.platform_dependent(*args, cpu=cpu, default=default)
