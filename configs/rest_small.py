"""ResT-S on ImageNet-1K from scratch (the ResT recipe of configs/rest_lite.py).

  python main.py --config=configs/rest_small.py --workdir=runs/rest_small

Expected top-1: 79.6 (official README).
"""

from configs import rest_lite


def get_config():
  config = rest_lite.get_config()
  config.model = 'rest_small'
  config.drop_path_rate = 0.1
  return config
