"""What a compiled HLO module contains: its collectives and the kernels of attention and pooling.

Reads the text of `compiled.as_text()` (the optimised, partitioned module of one device).
Counts are static: an instruction inside a loop body counts once however often it runs.
"""

import collections
import re
from typing import Any

# Bytes per element of HLO's element types.
_DTYPE_BYTES = {
    'pred': 1, 's4': 0.5, 'u4': 0.5, 's8': 1, 'u8': 1, 'f8e4m3fn': 1, 'f8e5m2': 1,
    'f8e4m3': 1, 'f8e4m3fnuz': 1, 'f8e5m2fnuz': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2,
    's32': 4, 'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16,
}
ARRAY = re.compile(r'\b(' + '|'.join(_DTYPE_BYTES) + r')\[([\d,]*)\]')
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
# `<name> = <shape> <opcode>(`: the opcode is the word right before the operand list.
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<shape>.*?)\s'
                          r'(?P<op>[a-z][a-z0-9\-]*)\(')
_CUSTOM_CALL_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_FEATURE_GROUPS = re.compile(r'feature_group_count=(\d+)')

# Custom-call targets of fused attention kernels, by kernel family.
_ATTENTION_CALLS = (
    ('cudnn_fused_attention', re.compile(r'^__cudnn\$fmha')),
    ('pallas_mosaic_tpu', re.compile(r'^tpu_custom_call$')),
    ('pallas_triton_gpu', re.compile(r'^(__gpu\$xla\.gpu\.triton|triton_kernel_call)$')),
)


def array_bytes(shape: str) -> int:
  """Bytes of every array in an HLO shape string, e.g. `(bf16[8,128]{1,0}, f32[])`."""
  total = 0
  for dtype, dims in ARRAY.findall(shape):
    count = 1
    for d in dims.split(','):
      if d:
        count *= int(d)
    total += count * _DTYPE_BYTES[dtype]
  return int(total)


def instructions(hlo_text: str):
  """(opcode, result shape, line) of every instruction; the metadata is cut off."""
  for line in hlo_text.splitlines():
    # Metadata holds source names and op paths that could look like instructions.
    line = line.split(', metadata={', 1)[0]
    match = _INSTRUCTION.match(line)
    if match:
      yield match.group('op'), match.group('shape'), line


def summarize(hlo_text: str) -> dict[str, Any]:
  """Collectives, custom calls and the attention and pooling kernels of a module.

  Args:
    hlo_text: an HLO module as text.

  Returns:
    `collectives`: {op: {'count', 'bytes'}} (result bytes per device; an async pair
    counts once, with its `-done` result); `custom_calls`: {target: count};
    `ops`: counts of dot, convolution (and `depthwise_convolution`, feature groups > 1),
    reduce-window and fusion; `attention_kernels` and `pooling_kernels`: the kernel
    families found, e.g. ['cudnn_fused_attention'] or ['xla_matmuls'],
    ['depthwise_convolution', 'reduce-window'].
  """
  collectives = {op: {'count': 0, 'bytes': 0} for op in COLLECTIVES}
  custom_calls = collections.Counter()
  ops = collections.Counter()
  for op, shape, line in instructions(hlo_text):
    base = op[:-len('-done')] if op.endswith('-done') else op
    if base in collectives:
      collectives[base]['count'] += 1
      collectives[base]['bytes'] += array_bytes(shape)
    elif op == 'custom-call':
      target = _CUSTOM_CALL_TARGET.search(line)
      name = target.group(1) if target else '?'
      custom_calls[name] += 1
      if name.startswith('__cudnn$conv') and _feature_groups(line) > 1:
        ops['depthwise_convolution'] += 1
    elif op in ('dot', 'convolution', 'reduce-window', 'fusion'):
      ops[op] += 1
      if op == 'convolution' and _feature_groups(line) > 1:
        ops['depthwise_convolution'] += 1
  attention = [family for family, pattern in _ATTENTION_CALLS
               if any(pattern.match(name) for name in custom_calls)]
  cudnn_convs = sum(n for t, n in custom_calls.items() if t.startswith('__cudnn$conv'))
  pooling = [name for name, present in (
      ('depthwise_convolution', ops['depthwise_convolution'] > 0),
      ('cudnn_convolution', cudnn_convs > 0),
      ('reduce-window', ops['reduce-window'] > 0)) if present]
  return {
      'collectives': collectives,
      'custom_calls': dict(sorted(custom_calls.items())),
      'ops': {k: ops[k] for k in ('dot', 'convolution', 'depthwise_convolution',
                                  'reduce-window', 'fusion')},
      # Without a fused kernel, attention's two matmuls are XLA's own dots and GEMMs.
      'attention_kernels': attention or ['xla_matmuls'],
      'pooling_kernels': pooling,
  }


def _feature_groups(line: str) -> int:
  match = _FEATURE_GROUPS.search(line)
  return int(match.group(1)) if match else 1
