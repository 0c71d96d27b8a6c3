"""ResT-B on ImageNet-1K from scratch (the ResT recipe of configs/rest_lite.py).

  python main.py --config=configs/rest_base.py --workdir=runs/rest_base

Expected top-1: 81.6 (official README).
"""

from configs import rest_lite


def get_config():
  config = rest_lite.get_config()
  config.model = 'rest_base'
  config.drop_path_rate = 0.2
  return config
