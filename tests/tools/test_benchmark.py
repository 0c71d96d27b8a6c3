"""The throughput benchmark on a tiny model: its JSON lines, and no recompilation."""

import json

import numpy as np
import pytest

from mvitv2_jax.data import images
from mvitv2_jax.data import video
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


def _stub_batches(batch_size, num_batches, created, config):
  created.append(config)
  for _ in range(num_batches):
    sum(range(20_000))  # Some CPU time, so that the per-CPU-second rate is defined.
    yield {'label': np.zeros(batch_size, np.int32)}


def test_measure_throughput_times_the_batches_after_one_warm_up():
  created = []
  # Exactly 1 + 3 batches: a fourth timed one would raise StopIteration.
  throughput = benchmark.measure_throughput(
      lambda config: _stub_batches(5, 4, created, config), 'config', 3)
  assert created == ['config']
  assert throughput['images_per_s'] > 0 and throughput['images_per_cpu_s'] > 0


def test_input_modes_time_the_train_iterators_of_the_data_sources(monkeypatch):
  created = []
  for source in (images, video):
    monkeypatch.setattr(source, 'create_train_iterator',
                        lambda config: _stub_batches(config.batch_size, 3, created, config))
  image, clips = benchmark.main(['--modes', 'input,video_input', '--batch_sizes', '4',
                                 '--image_sizes', '32', '--input_batches', '2'])
  assert [c.dataset for c in created] == ['mvitv2_demo_shapes', 'mvitv2_demo_motion/large']
  assert image['mode'] == 'input' and image['images_per_s'] > 0
  assert clips['mode'] == 'video_input' and clips['num_frames'] == 16
  assert clips['clips_per_s'] > 0 and clips['clips_per_cpu_s'] > 0
