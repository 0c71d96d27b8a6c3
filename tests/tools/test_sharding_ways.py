"""The model compiled the four ways users shard code: fused attention in each, no logits."""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.helpers import training
from tools import sharding_ways

_TINY = ['--config=configs/demo.py', '--config.image_size=32', '--config.batch_size=8',
         '--config.dtype=bfloat16', '--override=embed_dim=24', '--override=depths=(1,1)']


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:
    return False


def _ways(tmp_path, target, *flags):
  out = tmp_path / 'ways.jsonl'
  result = subprocess.run(
      [sys.executable, '-m', 'tools.compile_report', f'--target={target}', '--ways',
       f'--json_out={out}', *_TINY, *flags],
      env=training.subprocess_env(JAX_PLATFORMS='cpu'), capture_output=True, text=True,
      timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return {r['way']: r for r in map(json.loads, out.read_text().splitlines())}


def test_logit_sized_arrays_are_found_by_shape():
  hlo = '\n'.join([
      '  %a = f32[2,1,64,4]{3,2,1,0} dot(f32[2,1,64,24] %q, f32[2,1,4,24] %k)',
      '  %b = bf16[64,4]{1,0} parameter(0)',  # Rank 2: a weight, not logits.
      '  %c = (f32[2,3,16,16], s32[]) tuple(%x, %y)',
  ])
  assert sharding_ways.count_logit_arrays(hlo, {(64, 4), (16, 16)}) == 2


@pytest.mark.skipif(not _installed('libtpu'),
                    reason='libtpu is not installed (.ci/run installs it; else pip install '
                           '-r requirements-aot.txt)')
def test_pallas_kernel_stays_fused_every_way_on_a_tpu(tmp_path):
  rows = _ways(tmp_path, 'v5e-4')
  assert sorted(rows) == sorted(sharding_ways.WAYS)
  for way, row in rows.items():
    assert 'error' not in row, row
    assert row['attention_kernels'] == ['pallas_mosaic_tpu'] and row['fused_calls'] > 0, row
    assert row['logit_arrays'] == 0, row
  # The counter sees logits where they are built: XLA's own einsum attention.
  einsum = _ways(tmp_path, 'v5e-4', '--override=attention_impl=einsum')
  assert all(row['logit_arrays'] > 0 for row in einsum.values()), einsum


@pytest.mark.slow
@pytest.mark.skipif(not (_installed('jax_cuda12_plugin') and _installed('nvidia.cudnn')),
                    reason='the CUDA plugin and cuDNN are not installed '
                           '(pip install -r requirements-aot.txt)')
def test_cudnn_kernel_stays_fused_every_way_on_gpus(tmp_path):
  for way, row in _ways(tmp_path, 'h100x4').items():
    assert 'error' not in row, (way, row)
    assert row['attention_kernels'] == ['cudnn_fused_attention'] and row['logit_arrays'] == 0
