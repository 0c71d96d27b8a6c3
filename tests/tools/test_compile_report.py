"""The compile report: targets, HLO summary, failures and extrapolation; a real TPU and
GPU compile of a tiny model where the optional packages (requirements-aot.txt) are installed."""

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from tests.helpers import training
from tools import aot_targets
from tools import hlo_summary
from tools import trainer_programs
from tools import report_rows

# compile_report sets JAX_PLATFORMS on import; the pytest process already runs on the CPU.
from tools import compile_report  # pylint: disable=g-bad-import-order


@pytest.mark.parametrize('name, chips, topology', [
    ('v5e-8', 8, 'v5e:2x4'), ('v5e-256', 256, 'v5e:16x16'), ('v6e-4', 4, 'v6e:2x2'),
    ('v4-8', 4, 'v4:2x2x1'), ('v4-32', 16, 'v4:2x2x4'), ('v4-128', 64, 'v4:4x4x4'),
    ('v5p-8', 4, 'v5p:2x2x1'), ('h100x8', 8, '1x1x8'), ('h200x16', 16, '1x2x8'),
    ('a100x2', 2, '1x1x2'),
])
def test_targets_name_chips_and_topology(name, chips, topology):
  target = aot_targets.parse_target(name)
  assert (target.num_chips, target.topology) == (chips, topology)


@pytest.mark.parametrize('name, message', [
    ('v5e-6', 'power of two'), ('v4-5', 'TensorCores'), ('v5e-2', 'at least 4 chips'),
    ('h100x12', '8 GPUs each'), ('tpu-v5', 'Unknown target'), ('h100', 'Unknown target'),
])
def test_bad_target_names_say_why(name, message):
  with pytest.raises(ValueError, match=message):
    aot_targets.parse_target(name)


@pytest.mark.parametrize('kind', ['h100', 'h200', 'a100'])
def test_gpu_target_configs_match_their_chip(kind):
  chip = aot_targets.CHIPS[kind]
  text = aot_targets.gpu_target_config(chip)
  assert f'device_memory_size: {chip.memory_bytes}\n' in text
  assert f'device_description_str: "{chip.name}"' in text


def test_device_kinds_name_their_chip_and_peak():
  assert aot_targets.chip_of_device_kind('TPU v5 lite').peak_bf16_tflops == 197.0
  assert aot_targets.chip_of_device_kind('NVIDIA H200').name == 'NVIDIA H200 141GB HBM3e'
  assert aot_targets.chip_of_device_kind('cpu') is None


_HLO = '''
HloModule jit_step, num_partitions=8

%fused (p0: bf16[8,56,56,96], p1: bf16[3,3,1,96]) -> bf16[8,28,28,96] {
  ROOT %convolution.3 = bf16[8,28,28,96]{3,2,1,0} convolution(%p0, %p1), window={size=3x3 stride=2x2 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, feature_group_count=96, metadata={op_name="jit(step)/conv_general_dilated"}
}

ENTRY %main (a: f32[1024,96], b: bf16[8,3136,96]) -> f32[] {
  %all-reduce-start.1 = f32[1024,96]{1,0} all-reduce-start(%a), replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%add
  %all-reduce-done.1 = f32[1024,96]{1,0} all-reduce-done(%all-reduce-start.1)
  %all-gather.2 = bf16[64,96]{1,0} all-gather(%c), dimensions={0}
  %reduce-scatter.1 = f32[128,96]{1,0} reduce-scatter(%d), dimensions={0}, to_apply=%add
  %fmha = (bf16[8,1,3136,96]{3,1,2,0}, u8[0]{0}) custom-call(%q, %k, %v), custom_call_target="__cudnn$fmhaSoftmax", metadata={op_name="all-gather(x)"}
  %cudnn-conv = (bf16[8,28,28,96]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w), window={size=3x3}, feature_group_count=96, custom_call_target="__cudnn$convForward"
  %reduce-window.7 = bf16[8,28,28,96]{3,2,1,0} reduce-window(%x, %init), window={size=1x3x3x1 stride=1x2x2x1}, to_apply=%max
  %dot.4 = bf16[3136,288]{1,0} dot(%x, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %fusion.1 = bf16[8,28,28,96]{3,2,1,0} fusion(%b, %w), kind=kOutput, calls=%fused
}
'''


def test_hlo_summary_counts_collectives_kernels_and_pooling():
  summary = hlo_summary.summarize(_HLO)
  c = summary['collectives']
  # The async pair counts once, with the bytes of its result.
  assert c['all-reduce'] == {'count': 1, 'bytes': 1024 * 96 * 4}
  assert c['all-gather'] == {'count': 1, 'bytes': 64 * 96 * 2}
  assert c['reduce-scatter'] == {'count': 1, 'bytes': 128 * 96 * 4}
  assert c['collective-permute'] == {'count': 0, 'bytes': 0}
  assert summary['custom_calls'] == {'__cudnn$convForward': 1, '__cudnn$fmhaSoftmax': 1}
  assert summary['ops'] == {'dot': 1, 'convolution': 1, 'depthwise_convolution': 2,
                            'reduce-window': 1, 'fusion': 1}
  assert summary['attention_kernels'] == ['cudnn_fused_attention']
  assert summary['pooling_kernels'] == ['depthwise_convolution', 'cudnn_convolution',
                                        'reduce-window']


def test_hlo_summary_without_fused_attention_names_xla_matmuls():
  plain = '\n'.join(line for line in _HLO.splitlines() if 'fmha' not in line)
  assert hlo_summary.summarize(plain)['attention_kernels'] == ['xla_matmuls']
  tpu = '  %custom-call.9 = bf16[8,128]{1,0} custom-call(%q), custom_call_target="tpu_custom_call"'
  assert hlo_summary.summarize(tpu)['attention_kernels'] == ['pallas_mosaic_tpu']


def test_array_bytes_of_tuples_and_tpu_layouts():
  assert hlo_summary.array_bytes('(bf16[8,128]{1,0:T(8,128)(2,1)}, f32[], s32[4]{0})') == (
      8 * 128 * 2 + 4 + 16)


def test_triton_gemm_failure_names_its_fix():
  message = ("INTERNAL: Couldn't find output tile sizes that satisfy the constraints for "
             'bf16[3456,1152]')
  row = report_rows.failure(message, 80 * 2**30)
  assert row['status'] == 'error' and row['error'].startswith('INTERNAL')
  assert 'xla_gpu_enable_triton_gemm=false' in row['fix']
  assert report_rows.failure('INTERNAL: something else', 1)['fix'] is None


def test_tpu_out_of_memory_is_a_shortfall():
  message = ('RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in '
             'memory space hbm. Used 20.50G of 15.75G hbm. Exceeded hbm capacity by 4.75G.')
  row = report_rows.failure(message, 16 * 2**30)
  assert row['status'] == 'does_not_fit' and not row['fits']
  assert row['peak_gib'] == pytest.approx(20.5)
  assert row['shortfall_gib'] == pytest.approx(4.5)
  table = report_rows.format_table([dict(_row(), **row)])
  assert '**no**, 4.50 GiB short' in table
  message = ('RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO '
             'temporaries (26.59G) exceeds available HBM (15.75G).')
  row = report_rows.failure(message, 16 * 2**30)
  assert row['status'] == 'does_not_fit' and row['peak_gib'] == pytest.approx(26.59)


def _row(**fields):
  row = {'target': 'v5e-8', 'program': 'train', 'model': 'mvitv2_l', 'depths': [2, 6, 4, 4],
         'batch_per_chip': 32, 'remat': 'none', 'shard_params': True, 'scan_blocks': False,
         'status': 'ok', 'argument_gib': 1.0, 'temp_gib': 4.0, 'peak_gib': 6.0,
         'chip_gib': 16.0, 'fits': True, 'shortfall_gib': 0.0, 'xla_gflops_per_image': 100.0,
         'hlo_gflops_per_image': 90.0, 'model_gflops_per_image': 80.0, 'compile_s': 60.0,
         'collectives': {'all-reduce': {'count': 2, 'bytes': 2**20}},
         'ops': {'dot': 10}, 'custom_calls': {}, 'attention_kernels': ['xla_matmuls'],
         'pooling_kernels': ['reduce-window']}
  row.update(fields)
  return row


def test_extrapolation_is_the_line_through_two_depths():
  from mvitv2_jax import models  # pylint: disable=g-import-not-at-top
  model = models.create_model('mvitv2_l')
  a = _row(depths=[2, 6, 2, 4], peak_gib=5.0, compile_s=50.0, ops={'dot': 10},
           collectives={'all-reduce': {'count': 2, 'bytes': 100}})
  b = _row(depths=[2, 6, 4, 4], peak_gib=6.0, compile_s=60.0, ops={'dot': 14},
           collectives={'all-reduce': {'count': 2, 'bytes': 120}})
  row = compile_report._extrapolate(a, b, (36 - 2) / 2, [2, 6, 36, 4], 16 * 2**30, model, 224)
  assert row['depths'] == [2, 6, 36, 4]
  assert row['extrapolated_from'] == [[2, 6, 2, 4], [2, 6, 4, 4]]
  assert row['peak_gib'] == pytest.approx(22.0) and row['compile_s'] == pytest.approx(220.0)
  assert row['ops'] == {'dot': 78}
  assert row['collectives']['all-reduce'] == {'count': 2, 'bytes': 440}
  assert row['status'] == 'does_not_fit' and row['shortfall_gib'] == pytest.approx(6.0)


def test_overrides_reach_the_model_options():
  from configs import mvitv2_s  # pylint: disable=g-import-not-at-top
  config = mvitv2_s.get_config()
  config.lock()
  trainer_programs.apply_overrides(
      config, ['depths=(1,2,3,1)', 'remat=True', 'remat_policy=dots_saveable'])
  assert config.model_overrides.to_dict() == {
      'depths': (1, 2, 3, 1), 'remat': True, 'remat_policy': 'dots_saveable'}
  with pytest.raises(ValueError, match='name=value'):
    trainer_programs.apply_overrides(config, ['remat'])


def test_batch_sizes_must_divide_over_the_chips():
  # The trainer's own rule, before anything is built.
  config = training.tiny_config(batch_size=12, **{'optim.grad_accum_steps': 2})
  with pytest.raises(ValueError, match='8 devices x optim.grad_accum_steps 2 = 16'):
    compile_report.report(config, 'cpu-8')


_TINY = ['--config=configs/demo.py', '--config.image_size=32', '--config.batch_size=8',
         '--config.eval_batch_size=8', '--override=embed_dim=8', '--override=depths=(1,1)']


def _compile_tiny(tmp_path, target, *flags):
  out = tmp_path / 'report.jsonl'
  result = subprocess.run(
      [sys.executable, '-m', 'tools.compile_report', f'--target={target}',
       f'--json_out={out}', *_TINY, *flags],
      env=training.subprocess_env(JAX_PLATFORMS='cpu'), capture_output=True, text=True,
      timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return [json.loads(line) for line in out.read_text().splitlines()], result.stdout


def _check_rows(rows, chips, depths=(1, 1), pool_impl='conv'):
  assert [r['program'] for r in rows] == ['train', 'eval']
  for r in rows:
    assert r['status'] == 'ok' and r['fits'] and r['num_chips'] == chips
    assert r['batch_per_chip'] == 8 // chips and r['depths'] == list(depths)
    assert 0 < r['peak_gib'] < 1 and r['compile_s'] > 0
    # The unoptimised module counts elementwise ops too, and leaves out fused attention
    # kernels (custom calls): above the model count less its attention matmuls.
    assert r['model_gflops_per_image'] - r['attention_gflops_per_image'] <= (
        r['hlo_gflops_per_image']) < 1.5 * r['model_gflops_per_image']
    assert r['pool_impl'] == pool_impl
    if pool_impl == 'conv':
      assert 'depthwise_convolution' in r['pooling_kernels']
  if chips > 1:
    train, _ = rows
    # Replicated params: the gradients are all-reduced over the chips.
    assert train['collectives']['all-reduce']['count'] >= 1


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # Its parent package is missing.
    return False


def test_tiny_model_compiles_for_this_host(tmp_path):
  # The CPU target needs no optional package: the tool's whole path, in every CI run.
  # Two micro-batches per update: FLOPs per image are still the model's.
  rows, table = _compile_tiny(tmp_path, 'cpu-1', '--config.optim.grad_accum_steps=2')
  _check_rows(rows, 1, pool_impl='slices')  # The CPU's own kernels.
  for r in rows:
    assert r['chip'] == 'host CPU' and r['xla_gflops_per_image'] > 0
    assert r['attention_impl'] == 'einsum'
  assert re.search(r'^\| cpu-1 \| eval \| mvitv2_demo \(1x1\) \|', table, re.M)


@pytest.mark.slow
@pytest.mark.skipif(not _installed('libtpu'),
                    reason='libtpu is not installed (pip install -r requirements-aot.txt)')
def test_tiny_model_compiles_for_a_tpu_slice(tmp_path):
  rows, table = _compile_tiny(tmp_path, 'v5e-4')
  _check_rows(rows, 4)
  for r in rows:
    assert r['chip'] == 'TPU v5e' and r['xla_gflops_per_image'] > 0
    # The Pallas flash kernel, in the forward pass and its gradient.
    assert r['attention_impl'] == 'pallas' and r['attention_kernels'] == ['pallas_mosaic_tpu']
  assert re.search(r'^\| v5e-4 \| train \| mvitv2_demo \(1x1\) \|', table, re.M)


@pytest.mark.slow
@pytest.mark.skipif(not (_installed('jax_cuda12_plugin') and _installed('nvidia.cudnn')),
                    reason='the CUDA plugin and cuDNN are not installed '
                           '(pip install -r requirements-aot.txt)')
@pytest.mark.parametrize('cls_token', [False, True])
def test_tiny_model_compiles_for_gpus_with_cudnn(tmp_path, cls_token):
  # Two identical blocks in the second stage: one scanned run, its FLOPs counted unrolled.
  # A class token makes every token count odd: cuDNN's training kernel gets them padded.
  rows, _ = _compile_tiny(tmp_path, 'h100x2', '--config.dtype=bfloat16',
                          '--override=depths=(1,3)', '--override=scan_blocks=True',
                          f'--override=cls_token={cls_token}')
  _check_rows(rows, 2, depths=(1, 3))
  # The GPU plugin has no cost analysis of the compiled program: only the module's.
  assert all(r['xla_gflops_per_image'] is None and r['scan_blocks'] for r in rows)
  for r in rows:
    assert 'cudnn_convolution' in r['pooling_kernels']
    assert r['attention_impl'] == 'cudnn' and r['attention_kernels'] == ['cudnn_fused_attention']
