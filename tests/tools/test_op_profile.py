"""The per-op profile: thunk times attributed to model ops, on a real tiny step."""

import collections

from tools import op_profile

_HLO = '''
  %ynn_fusion.5 = f32[48,3,3,48]{3,2,1,0} fusion(%a, %b), kind=kCustom, calls=%fused.5
  %add_fusion.1 = f32[8,49,96]{2,1,0} fusion(%c), metadata={op_name="jit(loss)/ResT/stage1_0/attn/sr/add"}
  ROOT %add_fusion.2 = f32[8,49,96]{2,1,0} fusion(%d), metadata={op_name="jit(loss)/ResT/stage1_1/attn/sr/add"}
  %dot.3 = f32[8,384]{1,0} dot(%e, %f), metadata={op_name="jit(loss)/LIT/layers_2/blocks_10/mlp/dot_general"}
'''


def test_thunks_add_up_per_model_op_across_blocks():
  ops = op_profile.hlo_ops(_HLO)
  assert ops['add_fusion.1'] == ('f32[8,49,96]{2,1,0}', 'jit(loss)/ResT/stage1_N/attn/sr/add')
  assert ops['ynn_fusion.5'] == ('f32[48,3,3,48]{3,2,1,0}', '(no op_name)')
  assert ops['dot.3'][1] == 'jit(loss)/LIT/layers_2/blocks_N/mlp/dot_general'  # Stage kept.
  # Microseconds over 2 steps; executor events that are no HLO instruction are left out.
  times = collections.Counter({'add_fusion.1': 3000, 'add_fusion.2': 1000, 'ynn_fusion.5': 2000,
                               'ThunkExecutor::Execute': 9000})
  assert op_profile.per_op(times, ops, steps=2) == [
      (2.0, 'f32[8,49,96]{2,1,0}', 'jit(loss)/ResT/stage1_N/attn/sr/add'),
      (1.0, 'f32[48,3,3,48]{3,2,1,0}', '(no op_name)')]


def test_a_tiny_step_is_profiled_per_op(capsys):
  rows = op_profile.main(['--variant', 'mvitv2_t', '--image_size', '32', '--batch_size', '2',
                          '--mode', 'inference', '--steps', '1', '--top', '3'])
  assert rows and all(ms >= 0 for ms, _, _ in rows)
  assert any('MViTv2/blocks_N' in op for _, _, op in rows)
  assert 'ms per profiled step' in capsys.readouterr().out
