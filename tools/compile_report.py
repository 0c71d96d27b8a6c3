r"""Compiles the trainer's programs for a TPU or GPU target on this host, and reports per chip.

  pip install -r requirements-aot.txt   # optional: libtpu, the CUDA plugin, cuDNN
  python -m tools.compile_report --config=configs/mvitv2_l.py --target=v5e-8 \
      --config.batch_size=256 --json_out=reports.jsonl
  python -m tools.compile_report --config=configs/mvitv2_s.py --target=h100x8 \
      --programs=train --override=remat=True --override=remat_policy=dots_saveable

No accelerator is needed: the target's devices are compile-only devices (see
tools/aot_targets.py), the mesh spans them, and the programs are traced under it, so the
model's ops pick the target's kernels. The programs are the trainer's own
(`train.programs`): the jitted train step, with the state, optimizer and shardings the
trainer builds (donation, FSDP and gradient accumulation as configured), and the eval
step at the eval batch the trainer uses on that many chips, on ShapeDtypeStructs of the
task's global batches (a video config's eval batch holds every test view).

Per program and chip it reports memory (argument, output, temporaries and peak, against
the chip's HBM: a program that does not fit says by how much), FLOPs per image (XLA's
cost analysis of the compiled program where the backend has one, TPU, and the blocks are
unrolled; the unoptimised HLO's cost analysis on every target, of the unrolled programs;
the model family's analytic count, and of its attention matmuls), the
collectives, which attention and pooling kernels the HLO contains, and the lowering and
compile times; one JSON line per program (`--json_out`) and a table. A compile that fails
is reported with its error, and with the fix where one is known.
"""

import os

# Before jax is imported: the host runs on its CPU; the TPU library is loaded for its
# compiler only (alongside any other process using it) and skips the cloud metadata.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')

# pylint: disable=g-import-not-at-top,wrong-import-position
import json
import re
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
from jax._src.lib import _jax  # HLO cost analysis of a module: no public API yet.
import ml_collections
from ml_collections import config_flags

from mvitv2_jax import models
from mvitv2_jax import tasks
from mvitv2_jax.ops import platform as ops_platform
from mvitv2_jax.train import evaluation
from mvitv2_jax.train import sharding
from mvitv2_jax.train import validation
from tools import aot_targets
from tools import hlo_summary
from tools import report_rows
from tools import sharding_ways
from tools import trainer_programs

GiB = aot_targets.GiB
PROGRAMS = ('train', 'eval')

def _lowerings(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
               ) -> dict[str, tuple[Callable[[], Any], int]]:
  """The trainer's programs of `config`: {name: (lower it, its global batch)}.

  Lower them under `jax.set_mesh(mesh)`. The eval batch is the one the trainer uses on
  this many chips (`train.evaluation.eval_config`).
  """
  # Outside the mesh: building the state runs small eager ops (the init key), which
  # compile-only devices cannot run.
  programs = trainer_programs.build(config, mesh)
  eval_batch = evaluation.eval_config(config, trainer_programs.ImageNetSizes,
                                      mesh.size).eval_batch_size
  return {'train': (programs.lower_train, config.batch_size),
          'eval': (lambda: programs.lower_eval(eval_batch), eval_batch)}


def _compiled_gflops(compiled, batch: int, num_chips: int) -> float | None:
  """GFLOPs per image of the compiled per-chip program, where the backend counts them."""
  try:
    cost = compiled.cost_analysis()
  except NotImplementedError:
    return None  # The GPU plugin has no cost analysis of its executables.
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if not cost or cost.get('flops', 0) <= 0:
    return None
  return cost['flops'] / (batch / num_chips) / 1e9


def _module_gflops(lowered, batch: int) -> float:
  """GFLOPs per image of the whole unoptimised module, by the host's XLA (any target)."""
  module = lowered.compiler_ir('hlo').as_hlo_module()
  host = jax.devices('cpu')[0].client
  return _jax.hlo_module_cost_analysis(host, module).get('flops', 0.0) / batch / 1e9


def _unscanned(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with every block unrolled (`scan_blocks=False`)."""
  plain = config.copy_and_resolve_references()
  with plain.unlocked():
    plain.model_overrides.scan_blocks = False
  return plain


def _compiler_options(options: list[str]) -> dict[str, Any]:
  """`['name=value', ...]` as XLA compiler options (bools and ints parsed)."""
  parsed = {}
  for option in options:
    name, sep, value = option.partition('=')
    if not sep or not name:
      raise ValueError(f'--xla_option {option!r}: expected name=value.')
    lowered = value.lower()
    parsed[name] = (lowered == 'true' if lowered in ('true', 'false')
                    else int(value) if re.fullmatch(r'-?\d+', value) else value)
  return parsed


def report(config: ml_collections.ConfigDict, target_name: str, programs=PROGRAMS,
           xla_options: tuple[str, ...] = ()) -> list[dict[str, Any]]:
  """Compiles `programs` of `config` for `target_name`; one report row per program.

  Args:
    config: the run config (batch sizes are global, over the target's chips).
    target_name: e.g. 'v5e-8', 'h100x8' (see `aot_targets.parse_target`).
    programs: 'train' and/or 'eval'.
    xla_options: 'name=value' XLA compiler options for these compiles.

  Returns:
    Per program a dict: the setting, memory per chip, FLOPs per image, collectives,
    kernels, times; `status` 'ok', 'does_not_fit' or 'error' (with `error` and `fix`).
  """
  target = aot_targets.parse_target(target_name)
  validation.check_batch_sizes(config, target.num_chips)
  target_devices = aot_targets.devices(target)
  mesh = sharding.create_mesh(target_devices)
  # The trainer's options for this platform, then the caller's.
  options = {**ops_platform.compiler_options(mesh), **_compiler_options(list(xla_options))}
  rows = []
  start = time.perf_counter()
  built = _lowerings(config, mesh)
  setup_s = time.perf_counter() - start
  model = tasks.for_config(config).create_model(config)
  # XLA's cost analysis counts a loop body once however often it runs: a scanned model's
  # FLOPs are counted on the same programs unrolled, lowered only.
  scanned = getattr(model.cfg, 'scan_blocks', False)
  counted = _lowerings(_unscanned(config), mesh) if scanned else built
  with jax.set_mesh(mesh), aot_targets.cudnn_checks_read(target_devices):
    platform = ops_platform.mesh_platform()  # The ops' name for it: GPUs are 'cuda'.
    for name in programs:
      lower, batch = built[name]
      row = _setting(config, target, model, platform, name, batch)
      row.update(setup_s=setup_s, xla_options=options)
      start = time.perf_counter()
      lowered = lower()
      row['lower_s'] = time.perf_counter() - start
      start = time.perf_counter()
      try:
        compiled = lowered.compile(options)
      except Exception as e:  # pylint: disable=broad-except
        row.update(report_rows.failure(str(e), target.chip.memory_bytes),
                   compile_s=time.perf_counter() - start)
        rows.append(row)
        continue
      row['compile_s'] = time.perf_counter() - start
      row.update(report_rows.memory_fields(compiled, target.chip.memory_bytes))
      row['status'] = 'ok' if row['fits'] else 'does_not_fit'
      # Gradient accumulation is a loop too: its body computes one micro-batch.
      counted_batch = batch // config.optim.grad_accum_steps if name == 'train' else batch
      row['xla_gflops_per_image'] = (
          None if scanned else _compiled_gflops(compiled, counted_batch, target.num_chips))
      row['hlo_gflops_per_image'] = _module_gflops(
          counted[name][0]() if scanned else lowered, counted_batch)
      row.update(hlo_summary.summarize(compiled.as_text()))
      rows.append(row)
  return rows


# Report fields that grow linearly with the number of blocks of a stage.
_LINEAR_FIELDS = ('argument_gib', 'output_gib', 'alias_gib', 'temp_gib', 'code_gib',
                  'peak_gib', 'xla_gflops_per_image', 'hlo_gflops_per_image', 'lower_s',
                  'compile_s')
_LINEAR_COUNTS = ('collectives', 'custom_calls', 'ops')


def report_extrapolated(config: ml_collections.ConfigDict, target_name: str,
                        reduced: tuple[int, int], programs=PROGRAMS,
                        xla_options: tuple[str, ...] = ()) -> list[dict[str, Any]]:
  """Compiles the model with its deepest stage cut to two depths; extrapolates to the full one.

  For models whose full-depth compile needs more host memory or time than there is
  (MViTv2-H): every block of the deepest stage has the same shapes, so memory, FLOPs,
  collectives and compile time are linear in its depth, and two compiles fix the line.

  Args:
    config: the run config, at full depth.
    target_name: as for `report`.
    reduced: two depths (ascending) of the deepest stage to compile.
    programs: 'train' and/or 'eval'.
    xla_options: as for `report`.

  Returns:
    The measured rows of both reduced compiles, then per program the extrapolated row
    (`extrapolated_from` names the two measured depths).
  """
  model = tasks.for_config(config).create_model(config)
  full = list(model.cfg.depths)
  stage = full.index(max(full))
  low, high = reduced
  if not 0 < low < high < full[stage]:
    raise ValueError(f'Reduced depths {reduced} must rise, within 1..{full[stage] - 1} '
                     f'(the deepest stage of {full}).')
  measured = []
  for depth in reduced:
    cut = config.copy_and_resolve_references()
    depths = list(full)
    depths[stage] = depth
    with cut.unlocked():
      cut.model_overrides.depths = tuple(depths)
    measured.append(report(cut, target_name, programs, xla_options))
  chip_bytes = aot_targets.parse_target(target_name).chip.memory_bytes
  rows = measured[0] + measured[1]
  for a, b in zip(*measured):
    rows.append(_extrapolate(a, b, (full[stage] - low) / (high - low), full, chip_bytes,
                             model, config.image_size))
  return rows


def _extrapolate(a, b, t, depths, chip_bytes, model, image_size) -> dict[str, Any]:
  """The line through rows `a` and `b`, at `t` (0 at `a`, 1 at `b`)."""
  if 'peak_gib' not in a or 'peak_gib' not in b:
    failed = b if 'peak_gib' not in b else a
    return dict(failed, depths=depths, extrapolated_from=[a['depths'], b['depths']])
  line = lambda x, y: x + (y - x) * t
  row = dict(b, depths=depths, extrapolated_from=[a['depths'], b['depths']])
  for key in _LINEAR_FIELDS:
    if a.get(key) is not None and b.get(key) is not None:
      row[key] = line(a[key], b[key])
  for key in _LINEAR_COUNTS:
    row[key] = _extrapolate_counts(a.get(key, {}), b.get(key, {}), line)
  row.update(report_rows.fit({}, int(row['peak_gib'] * GiB), chip_bytes))
  row['status'] = 'ok' if row['fits'] else 'does_not_fit'
  row.update(_model_gflops(model, image_size, b['program']))
  return row


def _model_gflops(model, image_size: int, program: str) -> dict[str, float]:
  """The analytic GFLOPs per image of `program`, and of its attention matmuls alone."""
  parts = models.flops_per_example(model, image_size)
  # A train step: the forward pass and the backward pass's two matmuls per forward one.
  scale = (3 if program == 'train' else 1) / 1e9
  return {'model_gflops_per_image': sum(parts.values()) * scale,
          'attention_gflops_per_image': parts['attention'] * scale}


def _extrapolate_counts(a: dict, b: dict, line) -> dict:
  """`line` over nested dicts of counts, rounded to whole counts and bytes."""
  return {k: (_extrapolate_counts(a.get(k, {}), v, line) if isinstance(v, dict)
              else max(round(line(a.get(k, 0), v)), 0)) for k, v in b.items()}


def _setting(config, target, model, platform, program, batch) -> dict[str, Any]:
  """What was compiled: target, model, batch, memory options, kernels asked for."""
  train = program == 'train'
  model_cfg = model.cfg
  return {
      'target': target.name, 'topology': target.topology, 'chip': target.chip.name,
      'num_chips': target.num_chips, 'program': program, 'model': config.model,
      'depths': list(model_cfg.depths), 'image_size': config.image_size,
      'dtype': config.dtype, 'batch_size': batch, 'batch_per_chip': batch // target.num_chips,
      'grad_accum_steps': config.optim.grad_accum_steps if train else 1,
      'shard_params': config.shard_params,
      # ResT and LIT have neither option.
      'remat': (model_cfg.remat_policy or 'all') if getattr(model_cfg, 'remat', False) else 'none',
      'scan_blocks': getattr(model_cfg, 'scan_blocks', False),
      'attention_impl': ops_platform.resolve('attention', model_cfg.attention_impl, platform),
      'pool_impl': ops_platform.resolve('pool', model_cfg.pool_impl, platform),
      **_model_gflops(model, config.image_size, program),
      'jax': jax.__version__,
  }


_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                          lock_config=True)
_TARGET = flags.DEFINE_string('target', None, 'v4-N, v5e-N, v5p-N, v6e-N, h100xN, h200xN, '
                              'a100xN, cpu-N (this host: its compile times) '
                              '(Cloud TPU names: v4/v5p count TensorCores).')
_PROGRAMS = flags.DEFINE_list('programs', list(PROGRAMS), 'train and/or eval.')
_OVERRIDES = flags.DEFINE_multi_string(
    'override', [], 'A model option as name=value, e.g. depths=(2,6,36,4), remat=True.')
_XLA_OPTIONS = flags.DEFINE_multi_string(
    'xla_option', [], 'An XLA compiler option as name=value, for these compiles only.')
_EXTRAPOLATE_FROM = flags.DEFINE_list(
    'extrapolate_from', [], 'Two depths of the deepest stage, e.g. 4,8: compile at those '
    'and extrapolate linearly to the full depth (models too large to compile here).')
_WAYS = flags.DEFINE_bool(
    'ways', False, "Instead of the trainer's programs: the model's forward and gradient "
    'compiled the four ways users shard code (tools/sharding_ways.py).')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Append one JSON line per program here.')
flags.mark_flags_as_required(['config', 'target'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  unknown = set(_PROGRAMS.value) - set(PROGRAMS)
  if unknown:
    raise app.UsageError(f'Unknown programs {sorted(unknown)}; expected {PROGRAMS}.')
  config = _CONFIG.value
  try:
    trainer_programs.apply_overrides(config, _OVERRIDES.value)
    options = tuple(_XLA_OPTIONS.value)
    if _WAYS.value:
      rows = sharding_ways.report_ways(config, _TARGET.value)
    elif _EXTRAPOLATE_FROM.value:
      if len(_EXTRAPOLATE_FROM.value) != 2:
        raise ValueError('--extrapolate_from takes two depths, e.g. 4,8.')
      low, high = (int(d) for d in _EXTRAPOLATE_FROM.value)
      rows = report_extrapolated(config, _TARGET.value, (low, high), _PROGRAMS.value,
                                 options)
    else:
      rows = report(config, _TARGET.value, _PROGRAMS.value, options)
  except (ValueError, RuntimeError) as e:
    sys.exit(f'compile_report: {e}')
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'a') as f:
      for r in rows:
        f.write(json.dumps(r) + '\n')
  print((sharding_ways if _WAYS.value else report_rows).format_table(rows))


if __name__ == '__main__':
  app.run(main)
