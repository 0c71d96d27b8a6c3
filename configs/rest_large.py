"""ResT-L on ImageNet-1K from scratch (the ResT recipe of configs/rest_lite.py).

  python main.py --config=configs/rest_large.py --workdir=runs/rest_large

Expected top-1: 83.6 (official README).
"""

from configs import rest_lite


def get_config():
  config = rest_lite.get_config()
  config.model = 'rest_large'
  config.drop_path_rate = 0.3
  config.batch_size = 1920  # 8 GPUs x 240 (get_started.md).
  return config
