"""A model's forward and gradient compiled for a target the four ways users shard JAX code.

  python -m tools.compile_report --config=configs/demo.py --target=v5e-4 --ways

The ways: `plain_jit` (jit with sharded inputs, no mesh in context: JAX's sharding
tutorial), `set_mesh` (the same under `jax.set_mesh`), `shard_map` (the model inside a
`jax.shard_map` over the batch; Pallas kernels need `check_vma=False`) and `fsdp` (params
sharded over the mesh too). For each: the fused attention kernels the program holds and
how many arrays of attention-logit size ([..., queries, keys], which fused kernels never
build) it has, from the compiled module of one device.
"""

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mvitv2_jax import models
from mvitv2_jax import tasks
from mvitv2_jax.models import mvit
from mvitv2_jax.ops import platform as ops_platform
from mvitv2_jax.train import sharding
from tools import aot_targets
from tools import hlo_summary

WAYS = ('plain_jit', 'set_mesh', 'shard_map', 'fsdp')


def logit_shapes(model) -> set[tuple[int, int]]:
  """(queries, keys) of every attention of an MViT model at its build size."""
  cfg = model.cfg
  prefix = 1 if cfg.cls_token else 0
  grid = mvit.pooled_grid(cfg.input_size, cfg.per_axis(cfg.patch_stride))
  pairs = set()
  for spec in mvit.block_specs(cfg):
    q_grid = mvit.pooled_grid(grid, spec.q_stride)
    pairs.add((math.prod(q_grid) + prefix,
               math.prod(mvit.pooled_grid(grid, spec.kv_stride)) + prefix))
    grid = q_grid
  return pairs


def count_logit_arrays(hlo_text: str, pairs: set[tuple[int, int]]) -> int:
  """Instructions whose result is [..., batch, heads, queries, keys]: of rank 4 or more
  with the last two dims one of `pairs`."""
  count = 0
  for _, shape, _ in hlo_summary.instructions(hlo_text):
    for _, dims in hlo_summary.ARRAY.findall(shape):
      dims = tuple(int(d) for d in dims.split(',') if d)
      if len(dims) >= 4 and dims[-2:] in pairs:
        count += 1
        break
  return count


def _programs(model, mesh: jax.sharding.Mesh, batch: int):
  """{way: (jitted gradient of the summed logits, abstract params, abstract images)}."""
  shape = models.input_shape(model)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, *shape), jnp.float32))['params']
  placed = lambda tree, spec_of: jax.tree.map(
      lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=NamedSharding(mesh, spec_of(p))),
      tree)
  replicated = placed(params, lambda p: P())
  # Every leaf that divides, however small: a tiny model's params are sharded too.
  fsdp = placed(params, lambda p: sharding.fsdp_spec(p.shape, mesh.size, min_size=0))
  images = jax.ShapeDtypeStruct((batch, *shape), jnp.float32,
                                sharding=NamedSharding(mesh, P(sharding.DATA_AXIS)))
  grad = jax.grad(lambda p, x: jnp.sum(model.apply({'params': p}, x)))
  per_shard = jax.shard_map(
      lambda p, x: jax.lax.pmean(grad(p, x), sharding.DATA_AXIS), mesh=mesh,
      in_specs=(P(), P(sharding.DATA_AXIS)), out_specs=P(), check_vma=False)
  return {'plain_jit': (jax.jit(grad), replicated, images),
          'set_mesh': (jax.jit(grad), replicated, images),
          'shard_map': (jax.jit(per_shard), replicated, images),
          'fsdp': (jax.jit(grad), fsdp, images)}


def report_ways(config: ml_collections.ConfigDict, target_name: str) -> list[dict[str, Any]]:
  """Compiles the config's model four ways for `target_name`; one row per way.

  Args:
    config: a run config (its model, dtype, image size and global batch size).
    target_name: e.g. 'v5e-4', 'h100x8' (see `aot_targets.parse_target`).

  Returns:
    Per way: `attention_kernels`, `logit_arrays`, `compile_s`, or `error`.
  """
  target = aot_targets.parse_target(target_name)
  target_devices = aot_targets.devices(target)
  mesh = sharding.create_mesh(target_devices)
  model = tasks.for_config(config).create_model(config)
  pairs = logit_shapes(model)
  options = ops_platform.compiler_options(mesh)
  rows = []
  with aot_targets.cudnn_checks_read(target_devices):
    for way, (fn, params, images) in _programs(model, mesh, config.batch_size).items():
      row = {'target': target.name, 'way': way, 'model': config.model,
             'batch_size': config.batch_size, 'dtype': config.dtype}
      start = time.perf_counter()
      try:
        if way == 'set_mesh':
          with jax.set_mesh(mesh):
            compiled = fn.lower(params, images).compile(options)
        else:
          compiled = fn.lower(params, images).compile(options)
      except Exception as e:  # pylint: disable=broad-except
        row.update(error=(str(e).strip().splitlines() or ['compile failed'])[0][:300])
        rows.append(row)
        continue
      text = compiled.as_text()
      summary = hlo_summary.summarize(text)
      row.update(attention_kernels=summary['attention_kernels'],
                 fused_calls=sum(n for t, n in summary['custom_calls'].items()
                                 if t == 'tpu_custom_call' or t.startswith('__cudnn$fmha')),
                 logit_arrays=count_logit_arrays(text, pairs),
                 compile_s=round(time.perf_counter() - start, 1))
      rows.append(row)
  return rows


def format_table(rows: list[dict[str, Any]]) -> str:
  lines = ['| target | way | model | attention | fused calls | logit-sized arrays | compile s |',
           '| --- | --- | --- | --- | --- | --- | --- |']
  for r in rows:
    if 'error' in r:
      lines.append(f"| {r['target']} | {r['way']} | {r['model']} | error: {r['error']} | | | |")
    else:
      lines.append(f"| {r['target']} | {r['way']} | {r['model']} | "
                   f"{', '.join(r['attention_kernels'])} | {r['fused_calls']} | "
                   f"{r['logit_arrays']} | {r['compile_s']} |")
  return '\n'.join(lines)
