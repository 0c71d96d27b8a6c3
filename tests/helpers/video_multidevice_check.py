"""The video path on 8 simulated CPU devices vs one device (tests only).

Run as a subprocess. Prints one JSON line: the max abs difference from the
single-device result of one train step (loss, params) and of one multi-view eval
step (its sums), on the same global batches of clips.
"""

from tests.helpers import multidevice_check  # Sets XLA_FLAGS before jax is imported.

import json  # pylint: disable=g-import-not-at-top,wrong-import-order

import jax

from mvitv2_jax.train import programs as programs_lib
from mvitv2_jax.train import sharding
from tests.helpers import synthetic_data
from tests.helpers import training


def eval_sums(config, mesh, params):
  """The eval step's sums on the first synthetic eval batch, on `mesh`."""
  with jax.set_mesh(mesh):
    programs = programs_lib.build(config, mesh, synthetic_data)
    batch = next(synthetic_data.create_eval_iterator(config))
    return jax.device_get(programs.eval_step(jax.device_put(params, programs.shardings.params),
                                             sharding.host_to_global(batch, mesh)))


def main():
  assert jax.device_count() == 8, jax.devices()
  auto = (jax.sharding.AxisType.Auto,)
  one = jax.make_mesh((1,), ('data',), axis_types=auto, devices=jax.devices()[:1])
  eight = sharding.create_mesh()
  config = training.tiny_video_config(eval_batch_size=16)
  (ref_params, ref_loss), _ = multidevice_check.one_step(config, one)
  (params, loss), _ = multidevice_check.one_step(config, eight)
  ref_sums = eval_sums(config, one, ref_params)
  sums = eval_sums(config, eight, ref_params)
  print(json.dumps({
      'train': {'loss': abs(float(loss - ref_loss)),
                'params': multidevice_check.max_diff(params, ref_params)},
      'eval': {k: abs(float(sums[k] - ref_sums[k])) for k in ref_sums},
      'eval_count': float(ref_sums['count'])}))


if __name__ == '__main__':
  main()
