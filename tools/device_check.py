r"""One command that measures this project on an accelerator, section by section.

  python -m tools.device_check --out /tmp/device_check          # on a GPU (or TPU) host
  python -m tools.device_check --out /tmp/device_check --cpu    # tiny sizes, any host

Writes `device_check.json` (every row) and `device_check.md` (the table) to `--out`,
printing each row as it comes. Each section runs in a process of its own under a time
budget (GPU memory and its peak are then the section's own); a section that fails or
runs out of time is reported with why, and the others go on:

- `numerics`: cuDNN's fused attention against float32 einsum attention on the same
  inputs (bf16 and fp32), and MViTv2-T's golden logits in fp32.
- `train_s`, `train_b`, `train_l`: the trainer's own train step (bf16, AdamW, each
  variant's recipe) at two batch sizes per chip: images/s, step time, MFU against the
  chip's bf16 peak, device memory in use against the compiled program's plan (what
  tools/compile_report.py reports for it).
- `inference`: the trainer's eval step of MViTv2-S and -B at batch 256.
- `video`: the MViTv2-S 16x4 train step: clips/s and MFU.
- `attention`: the MViTv2-S train step with cuDNN's fused attention and with XLA's.
- `torch`: timm's MViTv2-S and -B with `torch.compile` (bf16 autocast, channels-last),
  inference and a train step, on the same device.

It needs only the model, ops and train-step code (no TensorFlow or TFDS), and runs on
jax 0.10 and 0.11. `--cpu` runs every section at tiny sizes, the same tiny program where
sections share one (CI runs it: with a persistent compilation cache, about a minute).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from typing import Any, Callable

# Section name -> (budget in seconds on an accelerator, what it measures).
SECTIONS = {
    'numerics': (45, 'fused attention and golden logits against float32 references'),
    'train_s': (75, 'MViTv2-S train step at two batch sizes'),
    'train_b': (75, 'MViTv2-B train step at two batch sizes'),
    'train_l': (90, 'MViTv2-L train step at two batch sizes'),
    'inference': (45, 'MViTv2-S and -B eval step at batch 256'),
    'video': (45, 'MViTv2-S 16x4 train step'),
    'attention': (45, 'MViTv2-S train step, cuDNN vs XLA attention'),
    'torch': (60, "timm's MViTv2-S and -B with torch.compile"),
}
# Accelerator: (variant, batches per chip) of the train sections; --cpu: tiny ones.
_TRAIN = {'train_s': ('mvitv2_s', (64, 128)), 'train_b': ('mvitv2_b', (64, 128)),
          'train_l': ('mvitv2_l', (16, 32))}
_CPU_BUDGET_S = 240
_WARMUP, _STEPS = 2, 5
_TINY_OVERRIDES = ['--override=embed_dim=16', '--override=depths=(1,1)']


def _row(section: str, case: str, **values) -> dict[str, Any]:
  row = {'section': section, 'case': case, **values}
  print(json.dumps(row), flush=True)
  return row


# -- Sections (run in a child process each) -----------------------------------------------


def _runner(variant: str, batch: int, mode: str, cpu: bool, **case_fields):
  """A compiled trainer step (tools/benchmark.py's `Runner`) of `variant`."""
  from tools import benchmark  # pylint: disable=g-import-not-at-top
  args = benchmark.parse_args(_TINY_OVERRIDES if cpu else [])
  case = benchmark.Case(variant, batch, 32 if cpu else _image_size(variant),
                        'float32' if cpu else 'bfloat16', mode, **case_fields)
  return benchmark.Runner(case, args)


def _image_size(variant: str) -> int:
  from mvitv2_jax import models  # pylint: disable=g-import-not-at-top
  return models.variant_config(variant).image_size


def _measure(section: str, case: str, runner) -> dict[str, Any]:
  """Times `runner` and reports its speed and its memory, planned and in use."""
  import jax  # pylint: disable=g-import-not-at-top
  from tools import report_rows  # pylint: disable=g-import-not-at-top
  for _ in range(_WARMUP):
    runner.step(timed=False)
  for _ in range(_STEPS):
    runner.step(timed=True)
  result = runner.result(None)
  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  plan = report_rows.memory_fields(runner.compiled, stats.get('bytes_limit', 0))['peak_gib']
  return _row(section, case, device=device.device_kind, compile_s=result['compile_s'],
              images_per_s=result['images_per_s_median'], step_s=result['step_s_median'],
              mfu=result['mfu'], attention=result['attention_impl'],
              planned_gib=plan, peak_in_use_gib=stats.get('peak_bytes_in_use', 0) / 2**30)


def _train(section: str, cpu: bool) -> list[dict[str, Any]]:
  variant, batches = _TRAIN[section]
  variant, batches = ('mvitv2_demo', (2,)) if cpu else (variant, batches)
  return [_measure(section, f'{variant} train, batch {b}', _runner(variant, b, 'train', cpu))
          for b in batches]


def _inference(section: str, cpu: bool) -> list[dict[str, Any]]:
  batch = 4 if cpu else 256
  variants = ('mvitv2_demo',) if cpu else ('mvitv2_s', 'mvitv2_b')
  return [_measure(section, f'{v} inference, batch {batch}', _runner(v, batch, 'inference', cpu))
          for v in variants]


def _video(section: str, cpu: bool) -> list[dict[str, Any]]:
  from tools import benchmark  # pylint: disable=g-import-not-at-top
  args = benchmark.parse_args(
      _TINY_OVERRIDES + ['--override=num_frames=4', '--override=kv_stride=(1,2,2)'] if cpu
      else [])
  batch = 2 if cpu else 8
  case = benchmark.Case('mvitv2_s_16x4', batch, 16 if cpu else 224,
                        'float32' if cpu else 'bfloat16', 'train')
  return [_measure(section, f'mvitv2_s_16x4 train, batch {batch} clips',
                   benchmark.Runner(case, args))]


def _attention(section: str, cpu: bool) -> list[dict[str, Any]]:
  variant, batch = ('mvitv2_demo', 2) if cpu else ('mvitv2_s', 64)
  return [_measure(section, f'{variant} train, batch {batch}, attention {impl}',
                   _runner(variant, batch, 'train', cpu, attention_impl=impl))
          for impl in ('auto', 'xla')]


def _numerics(section: str, cpu: bool) -> list[dict[str, Any]]:
  """Fused attention vs float32 einsum; the golden MViTv2-T logits in fp32."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mvitv2_jax import convert, models, ops  # pylint: disable=g-import-not-at-top
  from mvitv2_jax.ops import platform  # pylint: disable=g-import-not-at-top
  from tests.helpers import golden  # pylint: disable=g-import-not-at-top
  rows = []
  # MViTv2-S's first stage: 56x56 queries, 7x7 keys, 1 head of 96, as the model calls it.
  q_grid, k_grid, batch = ((8, 8), (2, 2), 2) if cpu else ((56, 56), (7, 7), 8)
  keys = jax.random.split(jax.random.key(0), 4)
  n_q, n_k = q_grid[0] * q_grid[1], k_grid[0] * k_grid[1]
  q = jax.random.normal(keys[0], (batch, n_q, 1, 96))
  k, v = (jax.random.normal(key, (batch, n_k, 1, 96)) for key in keys[1:3])
  terms = tuple(0.1 * jax.random.normal(jax.random.fold_in(keys[3], a),
                                        (batch, 1, *q_grid, k_grid[a])) for a in range(2))
  attend = lambda impl, dtype: jax.jit(lambda q, k, v, t: ops.attention(
      q.astype(dtype), k.astype(dtype), v.astype(dtype), t, k_grid=k_grid, num_prefix=0,
      impl=impl).astype(jnp.float32))(q, k, v, terms)
  reference = attend('einsum', jnp.float32)
  impl = platform.resolve('attention', 'auto', jax.default_backend().replace('gpu', 'cuda'))
  for dtype in (jnp.bfloat16, jnp.float32):
    diff = float(jnp.max(jnp.abs(attend(impl, dtype) - reference)))
    rows.append(_row(section, f'attention {impl} {jnp.dtype(dtype).name} vs float32 einsum',
                     max_abs_diff=diff))
  # The golden logits of the original PyTorch MViTv2-T, fp32 (matmuls at full precision).
  name, overrides = ('tiny', golden.TINY) if cpu else ('t', {})
  model = models.create_model('mvitv2_t', **overrides)
  params = convert.convert_state_dict(golden.recipe_state_dict(name), model)
  data = golden.load(name)
  with jax.default_matmul_precision('highest'):
    logits = jax.jit(lambda p, x: model.apply({'params': p}, x))(params, data['input_nhwc'])
  diff = float(np.max(np.abs(np.asarray(logits) - data['logits'])))
  rows.append(_row(section, f'golden mvitv2_t ({name}) logits fp32', max_abs_diff=diff,
                   bound=1e-4, ok=diff <= 1e-4))
  return rows


def _torch(section: str, cpu: bool) -> list[dict[str, Any]]:
  """timm's models with torch.compile on this process's device."""
  try:
    import timm  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return [_row(section, 'timm', status='skipped', why=f'{e.name} is not installed')]
  device = 'cuda' if torch.cuda.is_available() and not cpu else 'cpu'
  rows = []
  for variant, timm_name in (('mvitv2_s', 'mvitv2_small'), ('mvitv2_b', 'mvitv2_base')):
    for mode, batch in (('inference', 256), ('train', 64)):
      batch, size = (2, 32) if cpu else (batch, 224)
      model = timm.create_model(timm_name, img_size=size, drop_path_rate=0.1).to(device)
      model = model.to(memory_format=torch.channels_last)
      images = torch.randn(batch, 3, size, size, device=device).to(
          memory_format=torch.channels_last)
      labels = torch.randint(0, 1000, (batch,), device=device)
      compiled = torch.compile(model)
      optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

      def step():
        with torch.autocast(device, dtype=torch.bfloat16):
          if mode == 'inference':
            with torch.inference_mode():
              compiled(images)
            return
          loss = torch.nn.functional.cross_entropy(compiled(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

      model.train(mode == 'train')
      start = time.perf_counter()
      step()  # Compiles.
      compile_s = time.perf_counter() - start
      for _ in range(_WARMUP):
        step()
      times = []
      for _ in range(_STEPS):
        if device == 'cuda':
          torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == 'cuda':
          torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
      median = sorted(times)[len(times) // 2]
      rows.append(_row(section, f'timm {timm_name} {mode}, batch {batch}',
                       device=str(torch.cuda.get_device_name() if device == 'cuda' else 'cpu'),
                       compile_s=compile_s, images_per_s=batch / median, step_s=median))
  return rows


_RUN: dict[str, Callable[[str, bool], list[dict[str, Any]]]] = {
    'numerics': _numerics, 'train_s': _train, 'train_b': _train, 'train_l': _train,
    'inference': _inference, 'video': _video, 'attention': _attention, 'torch': _torch,
}


# -- The driver ------------------------------------------------------------------------------


def _run_section(name: str, out: str, cpu: bool, budget_s: float) -> list[dict[str, Any]]:
  """Runs section `name` in a child process; its rows, or one row saying why there are none."""
  command = [sys.executable, '-m', 'tools.device_check', '--out', out, '--section', name]
  start = time.perf_counter()
  try:
    proc = subprocess.run(command + (['--cpu'] if cpu else []), timeout=budget_s, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  except subprocess.TimeoutExpired as e:
    rows = _rows_of(e.stdout)
    return rows + [_row(name, '(section)', status='out of time',
                        why=f'budget of {budget_s:.0f} s spent; {len(rows)} rows done')]
  rows = _rows_of(proc.stdout)
  if proc.returncode != 0:
    tail = ' | '.join(proc.stdout.strip().splitlines()[-3:])[-500:]
    rows.append(_row(name, '(section)', status='failed', why=tail))
  print(f'-- {name}: {time.perf_counter() - start:.0f} s', flush=True)
  return rows


def _rows_of(output) -> list[dict[str, Any]]:
  if isinstance(output, bytes):
    output = output.decode(errors='replace')
  rows = []
  for line in (output or '').splitlines():
    if line.startswith('{'):
      try:
        rows.append(json.loads(line))
      except ValueError:
        pass
  return rows


def format_table(rows: list[dict[str, Any]]) -> str:
  """The rows as a Markdown table: section, case, then each row's values."""
  lines = ['| section | case | result |', '| --- | --- | --- |']
  for row in rows:
    values = ', '.join(f'{k} {_cell(v)}' for k, v in row.items() if k not in ('section', 'case'))
    lines.append(f"| {row['section']} | {row['case']} | {values} |")
  return '\n'.join(lines)


def _cell(value) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


def _child(name: str, cpu: bool) -> int:
  """A section's process: its rows on stdout, one JSON line each."""
  if cpu:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  try:
    _RUN[name](name, cpu)
  except Exception:  # pylint: disable=broad-except
    traceback.print_exc(file=sys.stdout)
    return 1
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--out', required=True, help='directory for device_check.json and .md')
  parser.add_argument('--cpu', action='store_true', help='tiny sizes on the CPU (CI)')
  parser.add_argument('--sections', default=','.join(SECTIONS),
                      help=f'comma-separated, of: {", ".join(SECTIONS)}')
  parser.add_argument('--section', help=argparse.SUPPRESS)  # A child runs one section.
  args = parser.parse_args(argv)
  if args.section:
    return _child(args.section, args.cpu)
  names = [s for s in args.sections.split(',') if s]
  unknown = sorted(set(names) - set(SECTIONS))
  if unknown:
    parser.error(f'unknown sections {unknown}; known: {", ".join(SECTIONS)}')
  os.makedirs(args.out, exist_ok=True)
  rows = []
  for name in names:
    budget, what = SECTIONS[name]
    print(f'-- {name}: {what} (budget {_CPU_BUDGET_S if args.cpu else budget} s)', flush=True)
    rows += _run_section(name, args.out, args.cpu, _CPU_BUDGET_S if args.cpu else budget)
  with open(os.path.join(args.out, 'device_check.json'), 'w') as f:
    json.dump(rows, f, indent=1)
  table = format_table(rows)
  with open(os.path.join(args.out, 'device_check.md'), 'w') as f:
    f.write(table + '\n')
  print(table)
  return 0


if __name__ == '__main__':
  sys.exit(main())
