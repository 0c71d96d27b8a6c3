"""The throughput benchmark on a tiny model: its JSON lines, and no recompilation."""

import json

import pytest

from mvitv2_jax.train import step as step_lib
from tools import benchmark

TINY = ['--variants', 'mvitv2_demo', '--batch_sizes', '2', '--image_sizes', '32',
        '--warmup', '1', '--steps', '2']


def test_json_lines_for_inference_and_train(tmp_path):
  out = tmp_path / 'bench.jsonl'
  results = benchmark.main(TINY + ['--modes', 'inference,train', '--json_out', str(out)])
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert lines == json.loads(json.dumps(results))
  assert [r['mode'] for r in lines] == ['inference', 'train']
  for r in lines:
    assert r['variant'] == 'mvitv2_demo' and r['batch_size'] == 2 and r['image_size'] == 32
    assert r['timed_steps'] == 2 and r['compile_s'] > 0
    assert 0 < r['images_per_s_median'] <= r['images_per_s_best']
    assert r['xla_gflops_per_image'] > 0 and r['model_tflops_per_s'] > 0
    assert r['mfu'] is None  # CPU: no known peak.
  inference, train = lines
  assert train['model_gflops_per_image'] == pytest.approx(3 * inference['model_gflops_per_image'])


def test_peak_flag_gives_mfu(tmp_path):
  (r,) = benchmark.main(TINY + ['--modes', 'inference', '--peak_tflops', '1.0'])
  assert r['mfu'] == pytest.approx(r['model_tflops_per_s'] / 1.0)


@pytest.mark.parametrize('mode,step', [('train', 'train_step'), ('inference', 'eval_step')])
def test_cases_time_the_trainers_own_step_traced_once(monkeypatch, mode, step):
  traces = []
  real = getattr(step_lib, step)

  def counted(*args, **kwargs):
    traces.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(step_lib, step, counted)
  (r,) = benchmark.main(TINY + ['--modes', mode])
  # Warmup and timed steps run the one executable compiled ahead of time.
  assert len(traces) == 1 and r['timed_steps'] == 2
