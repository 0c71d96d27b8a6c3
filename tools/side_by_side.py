r"""A model of this package and its PyTorch original, timed in turn on the same host.

  python -m tools.side_by_side --torch_python /tmp/pt/bin/python --reuse_host_memory \
      --variant mvitv2_s --batch_size 8 --modes inference,train --rounds 16
  python -m tools.side_by_side --torch_python /tmp/pt/bin/python --reuse_host_memory \
      --variant rest_base --official_root /path/to/wofmanaf/ResT
  python -m tools.side_by_side --torch_python /tmp/pt/bin/python --reuse_host_memory \
      --variant lit_s --official_root /path/to/ziplab/LIT

One worker process per framework builds its step (JAX: the trainer's own step for the
variant's recipe, compiled, as `benchmark` runs it; PyTorch: the original in eager mode,
with AdamW and global-norm clipping for a train step, drop path at the recipe's rate),
warms it up, then runs one step per request. The original of MViTv2 is timm's; that of
ResT, ResTv2 and LIT is the official checkout given by `--official_root`, imported as
the golden generators import it (`tests/golden/official_env.py`: timm's five helpers
stubbed, and LIT's CUDA-only DCNv1 extension replaced by its pure-torch equivalent). The driver asks them
in turn, the order alternating every round and with a pause before each step so that
the idle worker's threads are asleep. Machine noise then falls on both alike; besides
each side's median and best images/s, it reports the speed ratio (JAX over PyTorch) of
each round's pair of steps, which is steadier than a ratio of two medians on a
noisy host.

The PyTorch side runs in an interpreter of its own with torch, and for MViTv2 timm (and
the torchvision that timm imports), e.g.
  python -m venv /tmp/pt && /tmp/pt/bin/pip install torch==2.13.0+cpu
  /tmp/pt/bin/pip install --no-deps torchvision==0.28.0 timm
  /tmp/pt/bin/pip install numpy pyyaml huggingface_hub safetensors pillow
It never imports this package, so this file imports only the standard library at the
top; each worker imports its framework.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

# timm's names of this package's variants.
TIMM_NAMES = {
    'mvitv2_t': 'mvitv2_tiny', 'mvitv2_s': 'mvitv2_small', 'mvitv2_b': 'mvitv2_base',
    'mvitv2_l': 'mvitv2_large', 'mvitv2_b_cls': 'mvitv2_base_cls',
    'mvitv2_l_cls': 'mvitv2_large_cls', 'mvitv2_h_cls': 'mvitv2_huge_cls',
}
_PAUSE_S = 0.5
# The official code of the families timm does not have, built as the golden generators
# (tests/golden/{rest,lit}/generate.py) build it: variant -> (folder of the checkout,
# module, constructor, its keyword arguments).
_LIT_S_M_B = os.path.join('classification', 'code_for_lit_s_m_b')
OFFICIAL_MODELS = {
    **{name: ('', 'models.rest', name, {})
       for name in ('rest_lite', 'rest_small', 'rest_base', 'rest_large')},
    **{name: ('', 'models.rest_v2', name, {})
       for name in ('restv2_tiny', 'restv2_small', 'restv2_base', 'restv2_large')},
    'lit_ti': (os.path.join('classification', 'code_for_lit_ti'), 'lit', 'lit_ti', {}),
    'lit_s': (_LIT_S_M_B, 'models.lit', 'LIT',
              dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24])),
    'lit_m': (_LIT_S_M_B, 'models.lit', 'LIT',
              dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24])),
    'lit_b': (_LIT_S_M_B, 'models.lit', 'LIT',
              dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])),
}
_GOLDEN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'tests', 'golden')
# Keeps the op schemas `_import_timm` may declare: they go when this is collected.
_torchvision_schemas = None


def _serve(step, banner: str) -> None:
  """The worker loop: 'ready', then one timed step per line read from stdin."""
  step()
  step()
  print('ready', banner, flush=True)
  for _ in sys.stdin:
    start = time.perf_counter()
    step()
    print(time.perf_counter() - start, flush=True)


def _jax_step(args: argparse.Namespace):
  from tools import host_memory  # pylint: disable=g-import-not-at-top
  if args.reuse_host_memory and host_memory.runs_on_cpu():
    host_memory.reuse_freed_memory()  # As the benchmark does: before JAX starts.
  import jax  # pylint: disable=g-import-not-at-top
  from tools import benchmark  # pylint: disable=g-import-not-at-top
  case = benchmark.Case(args.variant, args.batch_size, args.image_size, 'float32', args.mode)
  runner = benchmark.Runner(case, benchmark.parse_args([]))
  return lambda: runner.step(timed=False), f'jax {jax.__version__} {jax.default_backend()}'


def _import_timm():
  global _torchvision_schemas
  import importlib.util  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torchvision = importlib.util.find_spec('torchvision')
  if torchvision:
    compiled_ops = glob.glob(os.path.join(torchvision.submodule_search_locations[0], '_C.*'))
    try:
      torch.ops.load_library(compiled_ops[0])
    except (IndexError, OSError):
      # No compiled ops, or ones that do not load (torchvision's CUDA wheel with the
      # CPU build of torch): its import then fails registering fake kernels for two
      # of them. MViTv2 uses no torchvision op; declaring those two schemas lets the
      # import finish.
      _torchvision_schemas = torch.library.Library('torchvision', 'DEF')
      for op in ('nms', 'qnms'):
        _torchvision_schemas.define(
            f'{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
  import timm  # pylint: disable=g-import-not-at-top
  return torch, timm


def _official_model(args: argparse.Namespace):
  """The official ResT / ResTv2 / LIT model of `args.variant`, from `args.official_root`."""
  folder, module_name, constructor, kwargs = OFFICIAL_MODELS[args.variant]
  sys.path.insert(0, _GOLDEN_DIR)
  import official_env  # pylint: disable=g-import-not-at-top
  is_lit = args.variant.startswith('lit')
  module = official_env.import_official(os.path.join(args.official_root, folder), module_name,
                                        dcn_returns_tuple=True if is_lit else None)
  size = {'img_size': args.image_size} if is_lit else {}  # ResT takes any size unasked.
  return getattr(module, constructor)(drop_path_rate=args.drop_path_rate, **size, **kwargs)


def _torch_step(args: argparse.Namespace):
  if args.variant in TIMM_NAMES:
    torch, timm = _import_timm()
    model = timm.create_model(TIMM_NAMES[args.variant], drop_path_rate=args.drop_path_rate,
                              img_size=args.image_size)
  else:
    import torch  # pylint: disable=g-import-not-at-top
    model = _official_model(args)
  torch.manual_seed(0)
  images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
  labels = torch.randint(0, 1000, (args.batch_size,))
  banner = f'torch {torch.__version__} cpu threads {torch.get_num_threads()}'
  if args.mode == 'inference':
    model.eval()

    def step():
      with torch.inference_mode():
        model(images)

    return step, banner
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

  def step():
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()

  return step, banner


def run_in_turn(commands: dict[str, list[str]], rounds: int,
                env: dict[str, str] | None = None) -> dict[str, list[float]]:
  """Starts one worker per command, then times `rounds` steps of each, in turn.

  Args:
    commands: worker name -> command line of a process that `_serve`s.
    rounds: steps per worker; round r runs the workers in order, reversed for odd r.
    env: the workers' environment (default: this process's).

  Returns:
    Worker name -> its step times in seconds, one per round.
  """
  workers = {}
  try:
    for name, command in commands.items():  # Built one at a time: compiling is busy.
      workers[name] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=env)
      banner = workers[name].stdout.readline()
      if not banner.startswith('ready'):
        raise RuntimeError(f'worker {name!r} ({" ".join(command)}) exited before it was '
                           'ready; its error is above.')
      print(f'{name}: {banner[len("ready"):].strip()}', file=sys.stderr, flush=True)
    times = {name: [] for name in workers}
    for r in range(rounds):
      for name in (list(workers) if r % 2 == 0 else list(workers)[::-1]):
        time.sleep(_PAUSE_S)
        workers[name].stdin.write('step\n')
        workers[name].stdin.flush()
        times[name].append(float(workers[name].stdout.readline()))
      print(f'round {r + 1}/{rounds}: ' + ', '.join(
          f'{name} {ts[-1]:.3f} s' for name, ts in times.items()), file=sys.stderr, flush=True)
    return times
  finally:
    for worker in workers.values():
      worker.stdin.close()
      worker.wait()


def summarize(times: dict[str, list[float]], batch_size: int, first: str,
              second: str) -> dict[str, float]:
  """Images/s of each side and the per-round speed ratio `first` over `second`."""
  summary = {}
  for name, ts in times.items():
    summary[f'{name}_images_per_s_median'] = batch_size / statistics.median(ts)
    summary[f'{name}_images_per_s_best'] = batch_size / min(ts)
  ratios = [b / a for a, b in zip(times[first], times[second])]
  summary.update(ratio_median=statistics.median(ratios), ratio_min=min(ratios),
                 ratio_max=max(ratios))
  return summary


def _worker_args(args: argparse.Namespace, mode: str, drop_path_rate: float) -> list[str]:
  return ['--variant', args.variant, '--batch_size', str(args.batch_size),
          '--image_size', str(args.image_size), '--mode', mode,
          '--drop_path_rate', str(drop_path_rate)] + (
              ['--reuse_host_memory'] if args.reuse_host_memory else []) + (
                  ['--official_root', args.official_root] if args.official_root else [])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  p.add_argument('--torch_python',
                 help='An interpreter with torch (and timm for MViTv2; see above).')
  p.add_argument('--variant', default='mvitv2_s', choices=sorted({*TIMM_NAMES, *OFFICIAL_MODELS}))
  p.add_argument('--official_root', default='',
                 help='ResT / LIT variants: a checkout of wofmanaf/ResT or ziplab/LIT.')
  p.add_argument('--batch_size', type=int, default=8)
  p.add_argument('--image_size', type=int, default=224)
  p.add_argument('--modes', default='inference,train', help='inference and/or train.')
  p.add_argument('--rounds', type=int, default=16, help='Timed steps per side and mode.')
  p.add_argument('--json_out', default='', help='Append one JSON line per mode here.')
  p.add_argument('--reuse_host_memory', action='store_true',
                 help='JAX worker on a CPU host: keep freed step memory mapped '
                      '(tools/host_memory.py).')
  # A worker's own flags.
  p.add_argument('--worker', choices=('jax', 'torch'), help=argparse.SUPPRESS)
  p.add_argument('--mode', help=argparse.SUPPRESS)
  p.add_argument('--drop_path_rate', type=float, default=0.0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if not args.worker and not args.torch_python:
    p.error('--torch_python is required: an interpreter with torch (see --help)')
  if args.variant in OFFICIAL_MODELS and not args.official_root:
    p.error(f'--official_root is required for {args.variant}: a checkout of its official '
            'code (see --help)')
  return args


def main(argv: list[str] | None = None) -> list[dict]:
  args = parse_args(argv)
  if args.worker:
    _serve(*(_jax_step if args.worker == 'jax' else _torch_step)(args))
    return []
  from tools import trainer_programs  # pylint: disable=g-import-not-at-top
  results = []
  for mode in args.modes.split(','):
    rate = trainer_programs.recipe(args.variant).drop_path_rate if mode == 'train' else 0.0
    flags = _worker_args(args, mode, rate)
    times = run_in_turn({
        'jax': [sys.executable, '-m', 'tools.side_by_side', '--worker', 'jax'] + flags,
        # -I: not this file's folder on sys.path, where module names could shadow.
        'torch': [args.torch_python, '-I', os.path.abspath(__file__), '--worker', 'torch'] + flags,
    }, args.rounds)
    result = dict(variant=args.variant, mode=mode, batch_size=args.batch_size,
                  image_size=args.image_size, dtype='float32', rounds=args.rounds,
                  **summarize(times, args.batch_size, 'jax', 'torch'), step_s=times)
    results.append(result)
    print(f"{mode}: jax {result['jax_images_per_s_median']:.2f} / "
          f"{result['jax_images_per_s_best']:.2f}, torch "
          f"{result['torch_images_per_s_median']:.2f} / "
          f"{result['torch_images_per_s_best']:.2f} images/s (median / best); "
          f"jax / torch per round: median {result['ratio_median']:.2f}, "
          f"range {result['ratio_min']:.2f}-{result['ratio_max']:.2f}", flush=True)
    if args.json_out:
      with open(args.json_out, 'a') as f:
        f.write(json.dumps(result) + '\n')
  return results


if __name__ == '__main__':
  main()
