r"""Where a step's time goes on this host: the trainer's step, profiled, summed per model op.

  python -m tools.op_profile --variant rest_base --mode train --batch_size 8 --steps 2

Builds `benchmark`'s case (the trainer's own train or eval step for the variant's recipe,
compiled for this host), then runs `--steps` steps under `jax.profiler.trace` with a
perfetto trace. XLA:CPU records each thunk it runs (a fusion, a dot, a conv) as one event;
their times are summed, divided by the steps, and attributed to the model op named by the
`op_name` metadata of the thunk's HLO instruction, with block numbers folded (`blocks_3` ->
`blocks_N`, ResT's `stage1_0` -> `stage1_N`) so that the blocks of a stage add up. Prints the `--top` ops with
their output shape and their share of the step.
"""

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile

import jax

from tools import benchmark

_HLO_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (\S+)')
_OP_NAME = re.compile(r'op_name="([^"]+)"')
_BLOCK_NUMBER = re.compile(r'\b(blocks|stage\d+)_\d+(?=/)')


def thunk_times(trace_dir: str) -> collections.Counter:
  """Microseconds per thunk name, summed over the perfetto trace written under `trace_dir`."""
  paths = glob.glob(f'{trace_dir}/**/perfetto_trace.json.gz', recursive=True)
  if not paths:
    raise RuntimeError(f'No perfetto trace under {trace_dir}: the profiler wrote none.')
  with gzip.open(paths[0]) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  times = collections.Counter()
  for event in events:
    if event.get('ph') == 'X':
      times[event['name']] += event.get('dur', 0)
  return times


def hlo_ops(hlo_text: str) -> dict[str, tuple[str, str]]:
  """HLO instruction name -> (its output shape, its model op with block numbers folded)."""
  ops = {}
  for line in hlo_text.splitlines():
    match = _HLO_INSTRUCTION.match(line)
    if match:
      op_name = _OP_NAME.search(line)
      ops[match.group(1)] = (match.group(2), _BLOCK_NUMBER.sub(r'\1_N', op_name.group(1))
                             if op_name else '(no op_name)')
  return ops


def per_op(times: collections.Counter, ops: dict[str, tuple[str, str]],
           steps: int) -> list[tuple[float, str, str]]:
  """(ms per step, shape, op) of every thunk that is an HLO instruction, largest first."""
  summed = collections.Counter()
  for name, micros in times.items():
    if name in ops:
      summed[ops[name]] += micros / 1e3 / steps
  return [(ms, shape, op) for (shape, op), ms in summed.most_common()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  p.add_argument('--variant', default='mvitv2_s')
  p.add_argument('--mode', default='train', choices=('train', 'inference'))
  p.add_argument('--batch_size', type=int, default=8)
  p.add_argument('--image_size', type=int, default=224)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--steps', type=int, default=2, help='Profiled steps, after two untimed.')
  p.add_argument('--top', type=int, default=25)
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[tuple[float, str, str]]:
  args = parse_args(argv)
  case = benchmark.Case(args.variant, args.batch_size, args.image_size, args.dtype, args.mode)
  print(f'Compiling the {args.mode} step of {args.variant} ...', flush=True)
  runner = benchmark.Runner(case, benchmark.parse_args([]))
  for _ in range(2):
    runner.step(timed=False)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(args.steps):
        runner.step(timed=True)
    times = thunk_times(trace_dir)
  rows = per_op(times, hlo_ops(runner.compiled.as_text()), args.steps)
  step_ms = 1e3 * sum(runner.step_s) / len(runner.step_s)
  print(f'{args.variant} {args.mode}, batch {args.batch_size}: {step_ms:.0f} ms per profiled '
        f'step; ops summed over its thunks:')
  for ms, shape, op in rows[:args.top]:
    print(f'{ms:8.1f} ms {100 * ms / step_ms:5.1f}%  {shape:28s} {op}')
  return rows


if __name__ == '__main__':
  main()
