"""The run's summary writer: TensorBoard scalars."""

import glob

import tensorflow as tf

from mvitv2_jax.train import metrics


def test_summary_writer_writes_tensorboard_scalars(tmp_path):
  writer = metrics.SummaryWriter(str(tmp_path))
  writer.scalars(7, {'train/loss': 1.25})
  writer.close()
  (path,) = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  values = [(e.step, v.tag, float(tf.make_ndarray(v.tensor)))
            for e in tf.compat.v1.train.summary_iterator(path)
            for v in e.summary.value]
  assert values == [(7, 'train/loss', 1.25)]
