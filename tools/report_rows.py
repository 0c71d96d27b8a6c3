"""Rows of a compile report: memory per chip against the chip, failed compiles, the table.

`tools/compile_report.py` makes the rows; this module says whether a program fits, what a
failed compile's message means (out of memory by how much, or a known error and its fix),
and prints the rows as Markdown.
"""

import re
from typing import Any

from mvitv2_jax.train import memory
from tools import aot_targets

GiB = aot_targets.GiB

# Compile errors whose cause and fix are known: (pattern in the message, fix).
_KNOWN_FAILURES = (
    (re.compile(r"Couldn't find output tile sizes"),
     "XLA's Triton GEMM emitter cannot tile one of the matmuls; compile with "
     'xla_gpu_enable_triton_gemm=false (the trainer\'s and this tool\'s default on GPUs, '
     'ops/platform.py COMPILER_OPTIONS), which gives them to cuBLAS.'),
)
# libtpu's out-of-memory messages: "Used 20.51G of 15.48G hbm. Exceeded hbm capacity by
# 5.03G." and "the total memory required for HLO temporaries (26.59G) exceeds available HBM
# (15.75G)" (then temporaries alone are counted).
_TPU_OOM = re.compile(
    r'Used ([\d.]+)([KMGT]) of ([\d.]+)([KMGT]) hbm'
    r'|temporaries \(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)')
_UNITS = {'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


def known_fix(message: str) -> str | None:
  """The fix for a compile error whose cause is known, else None."""
  for pattern, fix in _KNOWN_FAILURES:
    if pattern.search(message):
      return fix
  return None


def tpu_shortfall_bytes(message: str) -> tuple[int, int] | None:
  """(bytes used, bytes available) from libtpu's out-of-memory error, else None."""
  match = _TPU_OOM.search(message)
  if not match:
    return None
  used, used_unit, have, have_unit = [g for g in match.groups() if g is not None]
  return int(float(used) * _UNITS[used_unit]), int(float(have) * _UNITS[have_unit])


def memory_fields(compiled, chip_bytes: int) -> dict[str, Any]:
  """Per-chip memory of a compiled program, in GiB, and whether it fits the chip."""
  m = compiled.memory_analysis()
  peak = m.peak_memory_in_bytes or memory.required_bytes(compiled)
  return fit({
      'argument_gib': m.argument_size_in_bytes / GiB,
      'output_gib': m.output_size_in_bytes / GiB,
      'alias_gib': m.alias_size_in_bytes / GiB,
      'temp_gib': m.temp_size_in_bytes / GiB,
      'code_gib': m.generated_code_size_in_bytes / GiB,
  }, peak, chip_bytes)


def fit(row: dict[str, Any], peak_bytes: int, chip_bytes: int) -> dict[str, Any]:
  return dict(row, peak_gib=peak_bytes / GiB, chip_gib=chip_bytes / GiB,
              fits=peak_bytes <= chip_bytes,
              shortfall_gib=max(peak_bytes - chip_bytes, 0) / GiB)


def failure(message: str, chip_bytes: int) -> dict[str, Any]:
  """A failed compile as report fields: out of memory (with the shortfall) or an error."""
  lines = message.strip().splitlines() or ['compile failed']
  # An error raised in Python inside the compiler (a custom partitioner) is a traceback:
  # its last line says what failed.
  first = lines[0] if len(lines) == 1 else f'{lines[0]} ... {lines[-1]}'
  oom = tpu_shortfall_bytes(message)
  if oom:
    used, _ = oom
    # libtpu measures against the HBM it can use, a little under the chip's.
    return dict(fit({}, used, chip_bytes), status='does_not_fit', error=first[:500])
  return {'status': 'error', 'error': first[:500], 'fix': known_fix(message)}


def _gib(value) -> str:
  return '-' if value is None else f'{value:.2f}'


def format_table(rows: list[dict[str, Any]]) -> str:
  """The report rows as a Markdown table."""
  header = ('target', 'program', 'model', 'batch/chip', 'remat', 'fsdp', 'scan', 'arg GiB',
            'temp GiB', 'peak GiB', 'fits', 'GF/img xla / hlo / model', 'all-reduce n / MiB',
            'all-gather n / MiB', 'reduce-scatter n / MiB', 'attention', 'pooling',
            'compile s')
  lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  for r in rows:
    depths = 'x'.join(str(d) for d in r['depths'])
    if r.get('extrapolated_from'):
      depths += ', extrapolated'
    if r['status'] == 'error':
      cells = [r['target'], r['program'], f"{r['model']} ({depths})", r['batch_per_chip'],
               r['remat'], r['shard_params'], r['scan_blocks'],
               f"error: {r['error'][:120]}",
               *([''] * 9), f"{r['compile_s']:.0f}"]
      lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
      if r.get('fix'):
        lines.append(f"|  | fix: {r['fix']} |" + ' |' * (len(header) - 2))
      continue
    fits = 'yes' if r['fits'] else f"**no**, {r['shortfall_gib']:.2f} GiB short"
    c = r.get('collectives', {})
    coll = [f"{c[k]['count']} / {c[k]['bytes'] / 2**20:.0f}" if k in c else '-'
            for k in ('all-reduce', 'all-gather', 'reduce-scatter')]
    flops = (f"{_gib(r.get('xla_gflops_per_image'))} / {_gib(r.get('hlo_gflops_per_image'))}"
             f" / {r['model_gflops_per_image']:.2f}")
    cells = [r['target'], r['program'], f"{r['model']} ({depths})", r['batch_per_chip'],
             r['remat'], r['shard_params'], r['scan_blocks'],
             _gib(r.get('argument_gib')),
             _gib(r.get('temp_gib')), f"{r['peak_gib']:.2f} / {r['chip_gib']:.1f}", fits,
             flops, *coll, ', '.join(r.get('attention_kernels', ['-'])),
             ', '.join(r.get('pooling_kernels', ['-'])), f"{r['compile_s']:.0f}"]
    lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
  return '\n'.join(lines)
