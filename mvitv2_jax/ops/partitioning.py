"""Fused attention kernels as ops that partition under any sharding, with no mesh in context.

XLA cannot partition a Pallas kernel at all, and cuDNN's own rule fails when the heads
axis is sharded with others. Two wrappers run a kernel on each device's shard instead,
under plain `jax.jit` with sharded inputs, under `jax.set_mesh`, inside `jax.shard_map`
(where the kernel runs as it is) and with FSDP-sharded params alike:
- `over_batch_and_heads`: a `custom_partitioning` op whose rule keeps the inputs' batch
  and heads sharding, every token and channel local (CPU, GPU).
- `over_batch`: a primitive lowered as a `shard_map` over the batch on every device of
  the program, read from the lowering context (TPU: its compiler lacks custom
  partitioning, jax-ml/jax#38196).

Gradients: the kernel's own VJP runs per shard too. The forward op returns the output and
the residuals of the kernel's VJP; the backward op applies the VJP to them. Where a
residual keeps its batch and heads axes is found by tracing the kernel's VJP at scaled
shapes, so any kernel with a VJP works, whatever its residuals are.
"""

import functools
from typing import Callable, Sequence

import jax
from jax._src import core as jax_core
from jax._src import dispatch
from jax._src import sharding_impls
from jax._src.interpreters import mlir
from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend import core as jex_core
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

Array = jax.Array
# q, k, v [B, N, heads, d] -> out [B, N, heads, d_v].
Kernel = Callable[[Array, Array, Array], Array]
Shape = tuple[int, ...]
# Factors of q, k, v and the output in the ops' sharding rules: batch and heads may be
# sharded, queries, keys and channels may not.
_QKV = 'b n h d, b m h d, b m h e'
_OUT = 'b n h f'
_SHARDED = ('b', 'h')


def _forward(kernel: Kernel, q: Array, k: Array, v: Array) -> tuple[Array, ...]:
  """The output and the residuals of the kernel's VJP, flat."""
  out, vjp_fn = jax.vjp(kernel, q, k, v)
  return (out, *jax.tree.leaves(vjp_fn))


def _backward(kernel: Kernel, q: Array, k: Array, v: Array, g: Array,
              *residuals: Array) -> tuple[Array, Array, Array]:
  """The kernel's VJP of `g`, from the residuals `_forward` gave."""
  # Traced for the VJP's structure only: its forward is dead code, removed when traced.
  _, vjp_fn = jax.vjp(kernel, q, k, v)
  return jax.tree.unflatten(jax.tree.structure(vjp_fn), residuals)(g)


def _kernel_key(kernel: Kernel):
  """A key equal for equal kernels: a partial's function and arguments."""
  if isinstance(kernel, functools.partial):
    return (kernel.func, kernel.args, tuple(sorted(kernel.keywords.items())))
  return kernel


def _residual_axes(kernel: Kernel, shapes: tuple[Shape, Shape, Shape],
                   dtype: jnp.dtype) -> tuple[tuple[int | None, int | None], ...]:
  """`_trace_residual_axes`, once per kernel, shapes and dtype."""
  key = (_kernel_key(kernel), shapes, dtype)
  if key not in _AXES:
    _AXES[key] = _trace_residual_axes(kernel, shapes, dtype)
  return _AXES[key]


_AXES = {}


def _trace_residual_axes(kernel: Kernel, shapes: tuple[Shape, Shape, Shape],
                         dtype: jnp.dtype) -> tuple[tuple[int | None, int | None], ...]:
  """Per residual of the kernel's VJP at these q, k, v shapes: its batch and heads axes.

  Found by tracing the forward at twice the batch and at twice the heads: an axis that
  doubles is that axis (None: the residual has none). The backward is traced too, so a
  kernel that cannot run these shapes fails here, when the op is built.
  """
  def residual_shapes(batch: int, heads: int) -> list[Shape]:
    scaled = [jax.ShapeDtypeStruct((s[0] * batch, s[1], s[2] * heads, s[3]), dtype)
              for s in shapes]
    flat = jax.eval_shape(functools.partial(_forward, kernel), *scaled)
    jax.eval_shape(functools.partial(_backward, kernel), *scaled, flat[0], *flat[1:])
    return [r.shape for r in flat[1:]]

  def grown_axis(base: Shape, grown: Shape) -> int | None:
    changed = [axis for axis, (a, b) in enumerate(zip(base, grown)) if a != b]
    return changed[0] if changed else None

  base, batch, heads = residual_shapes(1, 1), residual_shapes(2, 1), residual_shapes(1, 2)
  return tuple((grown_axis(r, rb), grown_axis(r, rh)) for r, rb, rh in zip(base, batch, heads))


def _residual_factors(axes, ranks: Sequence[int]) -> list[str]:
  """The residuals' terms of a sharding rule: `b` and `h` where they have those axes."""
  terms = []
  for i, ((batch, heads), rank) in enumerate(zip(axes, ranks)):
    factors = [f'r{i}_{j}' for j in range(rank)]
    if batch is not None:
      factors[batch] = 'b'
    if heads is not None:
      factors[heads] = 'h'
    terms.append(' '.join(factors))
  return terms


def _rule(operands: list[str], results: list[str]):
  """A Shardy rule in which only batch and heads may be sharded."""
  rule = f'{", ".join(operands)} -> {", ".join(results)}'
  # Shardy wants the replicated factors in the order they first appear.
  order = dict.fromkeys(f for f in rule.replace('->', ' ').replace(',', ' ').split()
                        if f not in _SHARDED)
  return rule, {'need_replication_factors': tuple(order)}


def _types_shapes(types) -> list[Shape]:
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  return [tuple(ir.RankedTensorType(t).shape) for t in types]


def _batch_and_heads(sharding: NamedSharding):
  """The mesh axes of dims 0 (batch) and 2 (heads) of a [B, N, heads, d] sharding."""
  spec = tuple(sharding.spec) + (None,) * 4
  return spec[0], spec[2]


def _residual_shardings(mesh, batch, heads, axes, ranks) -> tuple[NamedSharding, ...]:
  shardings = []
  for (batch_axis, heads_axis), rank in zip(axes, ranks):
    spec = [None] * rank
    if batch_axis is not None:
      spec[batch_axis] = batch
    if heads_axis is not None:
      spec[heads_axis] = heads
    shardings.append(NamedSharding(mesh, P(*spec)))
  return tuple(shardings)


def _with_vjp(kernel: Kernel, forward, backward) -> Kernel:
  """The kernel as `forward(axes, q, k, v)` -> (out, residuals...), with the VJP
  `backward(axes, q, k, v, g, residuals...)`; `axes` are the residuals' batch and heads axes."""

  def axes_of(q, k, v):
    return _residual_axes(kernel, (q.shape, k.shape, v.shape), jnp.dtype(q.dtype))

  @jax.custom_vjp
  def attention(q, k, v):
    return forward(axes_of(q, k, v), q, k, v)[0]

  def attention_forward(q, k, v):
    out, *residuals = forward(axes_of(q, k, v), q, k, v)
    return out, (q, k, v, *residuals)

  def attention_backward(saved, g):
    q, k, v, *residuals = saved
    return tuple(backward(axes_of(q, k, v), q, k, v, g.astype(v.dtype), *residuals))

  attention.defvjp(attention_forward, attention_backward)
  return attention


def over_batch_and_heads(kernel: Kernel) -> Kernel:
  """`kernel` as an op that XLA partitions over batch and heads (`custom_partitioning`).

  Each device runs the kernel on its shard of the batch and of the heads, whichever mesh
  axes shard them; tokens and channels stay whole.

  Args:
    kernel: q, k, v [B, N, heads, d] -> [B, N, heads, d_v], differentiable.

  Returns:
    The same function of q, k, v, with its VJP.
  """
  # The residuals' axes are static arguments: the rules and partitions are called with them.
  forward = custom_partitioning(
      lambda axes, q, k, v: _forward(kernel, q, k, v), static_argnums=(0,))
  backward = custom_partitioning(
      lambda axes, q, k, v, g, *residuals: _backward(kernel, q, k, v, g, *residuals),
      static_argnums=(0,))

  def forward_partition(axes, mesh, arg_shapes, result_shapes):
    batch, heads = _batch_and_heads(arg_shapes[0].sharding)
    tokens = NamedSharding(mesh, P(batch, None, heads, None))
    residuals = _residual_shardings(mesh, batch, heads, axes,
                                    [len(r.shape) for r in result_shapes[1:]])
    return (mesh, functools.partial(_forward, kernel), (tokens, *residuals), (tokens,) * 3)

  def forward_rule(axes, mesh, operand_types, result_types):
    del mesh, operand_types
    ranks = [len(s) for s in _types_shapes(result_types)[1:]]
    return _rule([_QKV], [_OUT, *_residual_factors(axes, ranks)])

  def backward_partition(axes, mesh, arg_shapes, result_shapes):
    del result_shapes
    batch, heads = _batch_and_heads(arg_shapes[0].sharding)
    tokens = NamedSharding(mesh, P(batch, None, heads, None))
    residuals = _residual_shardings(mesh, batch, heads, axes,
                                    [len(r.shape) for r in arg_shapes[4:]])
    return (mesh, functools.partial(_backward, kernel), (tokens,) * 3,
            (tokens,) * 4 + residuals)

  def backward_rule(axes, mesh, operand_types, result_types):
    del mesh, result_types
    ranks = [len(s) for s in _types_shapes(operand_types)[4:]]
    return _rule([_QKV, _OUT, *_residual_factors(axes, ranks)], [_QKV])

  forward.def_partition(partition=forward_partition, sharding_rule=forward_rule)
  backward.def_partition(partition=backward_partition, sharding_rule=backward_rule)
  return _with_vjp(kernel, forward, backward)


# -- Per batch shard, the mesh from the lowering context (TPU) ----------------------------

per_batch_shard_p = jex_core.Primitive('per_batch_shard')
per_batch_shard_p.multiple_results = True


@per_batch_shard_p.def_abstract_eval
def _per_batch_shard_abstract_eval(*avals, fn, in_axes, out_axes):
  del in_axes, out_axes
  shapes = jax.eval_shape(fn, *(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals))
  return [jax_core.ShapedArray(s.shape, s.dtype) for s in shapes]


def _per_batch_shard_lowering(ctx, *operands, fn, in_axes, out_axes):
  """`fn` in a shard_map over every device of the program, each on its part of the batch."""
  context = ctx.module_context.axis_context
  devices, mesh = None, None
  if isinstance(context, sharding_impls.ShardingContext):
    devices, mesh = context.device_assignment, context.abstract_mesh
  elif isinstance(context, sharding_impls.SPMDAxisContext) and (
      set(context.manual_axes) != set(context.mesh.axis_names)):
    devices, mesh = context.mesh._flat_devices_tuple, context.mesh.abstract_mesh  # pylint: disable=protected-access
  if not devices or len(devices) == 1:  # One device, or inside a shard_map already.
    return mlir.lower_fun(fn, multiple_results=True)(ctx, *operands)
  if mesh is None or mesh.empty:
    mesh = jax.sharding.Mesh(np.array(devices), ('devices',))
  else:  # The program's mesh, made of its devices: shard_map must match it.
    mesh = jax.sharding.Mesh(np.array(devices).reshape(mesh.axis_sizes), mesh.axis_names,
                             axis_types=mesh.axis_types)
  spec = lambda axis, aval: P(*[tuple(mesh.axis_names) if i == axis else None
                                for i in range(aval.ndim)])
  sharded = jax.shard_map(
      fn, mesh=mesh, in_specs=tuple(map(spec, in_axes, ctx.avals_in)),
      out_specs=tuple(map(spec, out_axes, ctx.avals_out)),
      # The custom calls' outputs carry no varying-axes type to check.
      check_vma=False)
  return mlir.lower_fun(sharded, multiple_results=True)(ctx, *operands)


mlir.register_lowering(per_batch_shard_p, _per_batch_shard_lowering)
# The lowering reads the program's devices to build its mesh.
dispatch.prim_requires_devices_during_lowering.add(per_batch_shard_p)


def over_batch(kernel: Kernel) -> Kernel:
  """`kernel` run on each device's part of the batch, over every device of the program.

  For TPUs, whose compiler lacks `custom_partitioning` (jax-ml/jax#38196): the mesh is
  the program's own, read when it is lowered, so no mesh need be in context. Inputs
  sharded otherwise are resharded to the batch first. Inside a `shard_map` it needs
  `check_vma=False`, as the Pallas kernels it wraps do.

  Args:
    kernel: q, k, v [B, N, heads, d] -> [B, N, heads, d_v], differentiable.

  Returns:
    The same function of q, k, v, with its VJP.
  """
  def forward(axes, q, k, v):
    return per_batch_shard_p.bind(
        q, k, v, fn=_flat(functools.partial(_forward, kernel)), in_axes=(0, 0, 0),
        out_axes=(0, *(batch for batch, _ in axes)))

  def backward(axes, q, k, v, g, *residuals):
    return per_batch_shard_p.bind(
        q, k, v, g, *residuals, fn=_flat(functools.partial(_backward, kernel)),
        in_axes=(0, 0, 0, 0, *(batch for batch, _ in axes)), out_axes=(0, 0, 0))

  wrapped = _with_vjp(kernel, forward, backward)

  def attention(q, k, v):
    # A kernel with effects (Pallas's interpret mode on a CPU orders its callbacks) runs as
    # it is: the primitive carries no effect tokens, and an interpreter needs no partitioning.
    if jax.make_jaxpr(kernel)(q, k, v).effects:
      return kernel(q, k, v)
    return wrapped(q, k, v)

  return attention


def _flat(fn):
  """`fn` returning a tuple, as a primitive's results are."""
  return lambda *args: tuple(fn(*args))
