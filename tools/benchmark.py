r"""Throughput benchmark: inference, train step and input pipeline.

Examples (from the repository root):
  python -m tools.benchmark --variants mvitv2_s --batch_sizes 8 \
      --dtypes float32,bfloat16 --modes inference,train --json_out bench.jsonl
  python -m tools.benchmark --modes input --batch_sizes 64 --image_sizes 64
  python -m tools.benchmark --modes video_input --batch_sizes 8 --input_batches 4

A model case is the trainer's own program for the variant's recipe (configs/<variant>.py,
see tools/trainer_programs.py) at the case's batch, size and dtype on one device: its
train step (optimizer, mixup, drop path), or for inference its eval step (the forward
pass and the eval sums). Every case is compiled ahead of time (compile time reported
separately), warmed up, then timed one step at a time with `block_until_ready`. The repeats of all cases are
interleaved (one step of each case per round), so that machine noise spreads over
all cases alike; images/s are reported as the median and the best of the timed steps.

FLOPs are real FLOPs: 2 per multiply-add. `xla_gflops_per_image` comes from XLA's
cost analysis of the compiled program, which counts 2 per multiply-add of dots and
convolutions plus 1 per elementwise op (so it is a little above the model count);
`model_gflops_per_image` is the analytic count of the matmuls, convolutions and
einsums (fvcore's convention times 2: MViTv2-S at 224 is 7.0 GMACs = 14 GFLOPs),
times 3 for a train step (forward + two backward matmuls). MFU uses the model count.

XLA flags apply per process: compare them with separate runs appending to one
`--json_out` file (each line records its XLA_FLAGS), e.g.
  XLA_FLAGS=--xla_cpu_enable_fast_math=true python -m tools.benchmark ...

On a CPU host, `--reuse_host_memory` keeps XLA:CPU's step memory mapped between steps
(see tools/host_memory.py); the figures in docs/performance.md are taken with it.
"""

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import default
from mvitv2_jax import models
from mvitv2_jax.ops import platform
from mvitv2_jax.train import sharding
from tools import aot_targets
from tools import host_memory
from tools import trainer_programs


@dataclasses.dataclass(frozen=True)
class Case:
  variant: str
  batch_size: int
  image_size: int
  dtype: str
  mode: str  # 'inference' or 'train'.
  attention_impl: str = 'auto'  # `MViTv2Config.attention_impl`.
  pool_impl: str = 'auto'  # `MViTv2Config.pool_impl`.


def case_config(case: Case, args: argparse.Namespace) -> ml_collections.ConfigDict:
  """The variant's recipe at the case's batch size, input size, dtype and kernels."""
  config = trainer_programs.recipe(case.variant)
  config.batch_size = config.eval_batch_size = case.batch_size
  config.image_size = case.image_size
  config.dtype = case.dtype
  trainer_programs.apply_overrides(config, args.override)
  overrides = config.model_overrides
  overrides.attention_impl, overrides.pool_impl = case.attention_impl, case.pool_impl
  if args.remat_policy:
    overrides.remat = True
    overrides.remat_policy = '' if args.remat_policy == 'all' else args.remat_policy
  return config


class Runner:
  """One compiled case on one device: the trainer's step, its inputs and measurements.

  A train case runs the trainer's train step (the recipe's optimizer, mixup and drop
  path); an inference case its eval step (the forward pass and the eval sums).
  """

  def __init__(self, case: Case, args: argparse.Namespace):
    self.case = case
    config = case_config(case, args)
    mesh = sharding.create_mesh(jax.devices()[:1])
    with jax.set_mesh(mesh):
      programs = trainer_programs.build(config, mesh)
      self.model = programs.model
      rng = np.random.default_rng(0)
      train = case.mode == 'train'
      spec = programs.task.batch_spec(config, programs.model, case.batch_size, train=train)
      self.inputs = {k: _random(rng, v, config.num_classes) for k, v in spec.items()}
      state = programs.initial_state()
      self.state = state if train else state.variables()
      start = time.perf_counter()
      lowered = programs.lower_train() if train else programs.lower_eval(case.batch_size)
      # Steps run this executable: a step that traced or compiled again cannot happen.
      self.compiled = lowered.compile(platform.compiler_options(mesh))
    self.compile_s = time.perf_counter() - start
    cost = self.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    self.xla_flops = float(cost.get('flops', float('nan'))) if cost else float('nan')
    self.step_s: list[float] = []

  def step(self, timed: bool) -> None:
    start = time.perf_counter()
    if self.case.mode == 'inference':
      jax.block_until_ready(self.compiled(self.state, self.inputs))
    else:
      # The state is donated: feed each step the previous step's output.
      self.state, metrics = self.compiled(self.state, self.inputs)
      jax.block_until_ready((self.state, metrics))
    if timed:
      self.step_s.append(time.perf_counter() - start)

  def result(self, peak_tflops: float | None) -> dict[str, Any]:
    case, batch = self.case, self.case.batch_size
    cfg = self.model.cfg
    best, median = min(self.step_s), statistics.median(self.step_s)
    model_flops = sum(models.flops_per_example(self.model, case.image_size).values())
    if case.mode == 'train':
      model_flops *= 3.0
    device = jax.devices()[0]
    chip = aot_targets.chip_of_device_kind(device.device_kind)
    # Only bf16 has a known matmul peak: float32 matmuls run at a precision XLA picks.
    peak = peak_tflops or (chip.peak_bf16_tflops if chip and case.dtype == 'bfloat16' else None)
    achieved = model_flops * batch / median / 1e12
    return dict(
        variant=case.variant, mode=case.mode, batch_size=batch, image_size=case.image_size,
        dtype=case.dtype,
        attention_impl=platform.resolve('attention', cfg.attention_impl, device.platform),
        pool_impl=platform.resolve('pool', cfg.pool_impl, device.platform),
        # ResT and LIT have no remat option.
        remat=getattr(cfg, 'remat', False) and (cfg.remat_policy or 'all'),
        backend=jax.default_backend(),
        device_kind=device.device_kind,
        num_devices=1, compile_s=round(self.compile_s, 3), timed_steps=len(self.step_s),
        images_per_s_median=batch / median, images_per_s_best=batch / best,
        step_s_median=median, step_s_best=best,
        xla_gflops_per_image=self.xla_flops / batch / 1e9,
        model_gflops_per_image=model_flops / 1e9,
        model_tflops_per_s=achieved,
        xla_tflops_per_s=self.xla_flops / median / 1e12,
        peak_tflops=peak, mfu=(achieved / peak) if peak else None,
        xla_flags=os.environ.get('XLA_FLAGS', ''))


def _random(rng: np.random.Generator, spec: jax.ShapeDtypeStruct, num_classes: int):
  """A random array of `spec` (labels below `num_classes`, masks all True)."""
  if spec.dtype == np.int32:
    return jnp.asarray(rng.integers(0, num_classes, spec.shape), jnp.int32)
  if spec.dtype == np.bool_:
    return jnp.ones(spec.shape, bool)
  return jnp.asarray(rng.standard_normal(spec.shape, np.float32))


def run_model_cases(cases: list[Case], args: argparse.Namespace) -> list[dict[str, Any]]:
  """Compiles every case, then times them in interleaved rounds."""
  runners = []
  for case in cases:
    runners.append(Runner(case, args))
    print(f'compiled {case} in {runners[-1].compile_s:.1f} s', file=sys.stderr)
  for _ in range(args.warmup):
    for runner in runners:
      runner.step(timed=False)
  for _ in range(args.steps):
    for runner in runners:
      runner.step(timed=True)
  return [runner.result(args.peak_tflops) for runner in runners]


def measure_throughput(create_iterator: Callable[[ml_collections.ConfigDict], Iterator[dict]],
                       config: ml_collections.ConfigDict, num_batches: int) -> dict[str, float]:
  """Train-pipeline throughput on this host, after one warm-up batch.

  Args:
    create_iterator: `config -> batches`, a data source's `create_train_iterator`.
    config: the experiment config.
    num_batches: batches to time.

  Returns:
    'images_per_s': examples (images or clips) per wall-clock second, over all host
    cores; 'images_per_cpu_s': examples per second of CPU time of this process (all
    its threads), i.e. per core actually used, which stays meaningful when other
    work shares the host.
  """
  batches = create_iterator(config)
  batch = next(batches)
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    batch = next(batches)
  images = num_batches * batch['label'].shape[0]
  return {'images_per_s': images / (time.perf_counter() - start),
          'images_per_cpu_s': images / (time.process_time() - cpu_start)}


def run_input_case(batch_size: int, image_size: int, num_batches: int) -> dict[str, Any]:
  """Times the TFDS train pipeline on the demo dataset."""
  from mvitv2_jax.data import images  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.dataset = 'mvitv2_demo_shapes'
  config.batch_size = batch_size
  config.image_size = image_size
  config.shuffle_buffer = 1024
  throughput = measure_throughput(images.create_train_iterator, config, num_batches)
  images_per_s = throughput['images_per_s']
  cores = os.cpu_count() or 1
  return dict(mode='input', dataset=config.dataset, batch_size=batch_size,
              image_size=image_size, timed_batches=num_batches, images_per_s=images_per_s,
              host_cores=cores, images_per_s_per_core=images_per_s / cores,
              images_per_cpu_s=throughput['images_per_cpu_s'])


def run_video_input_case(batch_size: int, image_size: int, num_batches: int) -> dict[str, Any]:
  """Times the video train pipeline (Kinetics recipe, MViTv2-S 16x4 clips) on 256x320 videos."""
  from configs.video import kinetics  # pylint: disable=g-import-not-at-top
  from mvitv2_jax.data import video  # pylint: disable=g-import-not-at-top
  config = kinetics.get_config()
  config.dataset = 'mvitv2_demo_motion/large'
  config.num_classes = 8
  config.batch_size = batch_size
  config.image_size = image_size
  config.shuffle_buffer = 32
  throughput = measure_throughput(video.create_train_iterator, config, num_batches)
  clips_per_s = throughput['images_per_s']
  cores = os.cpu_count() or 1
  return dict(mode='video_input', dataset=config.dataset, batch_size=batch_size,
              image_size=image_size, num_frames=video.clip_length(config),
              timed_batches=num_batches, clips_per_s=clips_per_s, host_cores=cores,
              clips_per_s_per_core=clips_per_s / cores,
              clips_per_cpu_s=throughput['images_per_cpu_s'])


def _print_table(results: list[dict[str, Any]]) -> None:
  model_rows = [r for r in results if r['mode'] not in ('input', 'video_input')]
  if model_rows:
    header = ('variant', 'mode', 'batch', 'size', 'dtype', 'attention', 'pool', 'compile_s',
              'img/s med', 'img/s best', 'xla GF/img', 'model GF/img', 'TFLOP/s', 'MFU')
    print(' | '.join(header))
    for r in model_rows:
      mfu = f"{100 * r['mfu']:.1f}%" if r['mfu'] is not None else '-'
      print(' | '.join(str(v) for v in (
          r['variant'], r['mode'], r['batch_size'], r['image_size'], r['dtype'],
          r['attention_impl'], r['pool_impl'],
          f"{r['compile_s']:.1f}", f"{r['images_per_s_median']:.2f}",
          f"{r['images_per_s_best']:.2f}", f"{r['xla_gflops_per_image']:.2f}",
          f"{r['model_gflops_per_image']:.2f}", f"{r['model_tflops_per_s']:.4f}", mfu)))
  for r in results:
    if r['mode'] == 'input':
      print(f"input {r['dataset']} batch {r['batch_size']} at {r['image_size']}: "
            f"{r['images_per_s']:.1f} img/s = {r['images_per_s_per_core']:.1f} img/s per "
            f"host core (os.cpu_count() = {r['host_cores']}); "
            f"{r['images_per_cpu_s']:.1f} img per CPU-second of this process")
    if r['mode'] == 'video_input':
      print(f"video input {r['dataset']} batch {r['batch_size']} clips of "
            f"{r['num_frames']}x{r['image_size']}: {r['clips_per_s']:.2f} clips/s = "
            f"{r['clips_per_s_per_core']:.2f} clips/s per host core (os.cpu_count() = "
            f"{r['host_cores']}); {r['clips_per_cpu_s']:.2f} clips per CPU-second of "
            "this process")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  csv = lambda s: [v for v in s.split(',') if v]
  ints = lambda s: [int(v) for v in csv(s)]
  p.add_argument('--variants', type=csv, default=['mvitv2_s'])
  p.add_argument('--batch_sizes', type=ints, default=[8])
  p.add_argument('--image_sizes', type=ints, default=None,
                 help="Default: each variant's build size.")
  p.add_argument('--dtypes', type=csv, default=['float32'], help='float32 and/or bfloat16.')
  p.add_argument('--modes', '--mode', type=csv, default=['inference', 'train'],
                 help='inference, train, input (the TFDS pipeline alone) and/or '
                 'video_input (the video train pipeline, 16-frame clips).')
  p.add_argument('--input_only', action='store_true', help='Same as --modes input.')
  p.add_argument('--warmup', type=int, default=2, help='Untimed steps per case.')
  p.add_argument('--steps', type=int, default=5, help='Timed steps per case.')
  p.add_argument('--input_batches', type=int, default=20, help='Timed batches, input mode.')
  p.add_argument('--attention_impls', type=csv, default=['auto'],
                 help='Cases per attention_impl: auto, einsum and/or dot_product.')
  p.add_argument('--pool_impls', type=csv, default=['auto'],
                 help='Cases per pool_impl: auto, conv and/or slices.')
  p.add_argument('--override', action='append', default=[],
                 help='A model option as name=value, e.g. depths=(1,1) (repeatable).')
  p.add_argument('--remat_policy', default='',
                 help="Rematerialise blocks: 'all', or a jax.checkpoint_policies name.")
  p.add_argument('--peak_tflops', type=float, default=None,
                 help='Device peak for MFU (default: the bf16 peak of a known TPU or GPU '
                      '(tools/aot_targets.py), else none).')
  p.add_argument('--json_out', default='', help='Append one JSON line per case here.')
  p.add_argument('--reuse_host_memory', action='store_true',
                 help='On a CPU host, keep freed step memory mapped (tools/host_memory.py).')
  args = p.parse_args(argv)
  if args.input_only:
    args.modes = ['input']
  for mode in args.modes:
    if mode not in ('inference', 'train', 'input', 'video_input'):
      p.error(f'unknown mode {mode!r}')
  return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
  args = parse_args(argv)
  # Before any case runs: threads that allocated already keep their own arenas.
  reuses_freed_memory = (args.reuse_host_memory and host_memory.runs_on_cpu()
                         and host_memory.reuse_freed_memory())
  results = []
  model_modes = [m for m in args.modes if m not in ('input', 'video_input')]
  cases = []
  for variant, batch, dtype, mode, attention, pool in itertools.product(
      args.variants, args.batch_sizes, args.dtypes, model_modes, args.attention_impls,
      args.pool_impls):
    sizes = args.image_sizes or [models.variant_config(variant).image_size]
    cases += [Case(variant, batch, size, dtype, mode, attention, pool) for size in sizes]
  if cases:
    results += run_model_cases(cases, args)
  if 'input' in args.modes:
    for batch, size in itertools.product(args.batch_sizes, args.image_sizes or [64]):
      results.append(run_input_case(batch, size, args.input_batches))
  if 'video_input' in args.modes:
    for batch, size in itertools.product(args.batch_sizes, args.image_sizes or [224]):
      results.append(run_video_input_case(batch, size, args.input_batches))
  for r in results:
    r['host_malloc_reuse'] = reuses_freed_memory
  _print_table(results)
  if args.json_out:
    with open(args.json_out, 'a') as f:
      for r in results:
        f.write(json.dumps(r) + '\n')
  return results


if __name__ == '__main__':
  main()
