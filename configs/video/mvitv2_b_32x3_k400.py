"""MViTv2-B 32x3 on Kinetics-400: PySlowFast's `configs/Kinetics/MVITv2_B_32x3.yaml`.

Published: 82.9 top-1 (5 x 1 views).
"""

from configs.video import kinetics


def get_config():
  config = kinetics.get_config()
  config.model = 'mvitv2_b_32x3'
  config.video.sampling_rate = 3
  config.drop_path_rate = 0.3
  return config
