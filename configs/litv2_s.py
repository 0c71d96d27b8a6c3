"""LITv2-S on ImageNet-1K from scratch (the LIT recipe of configs/lit_s.py).

  python main.py --config=configs/litv2_s.py --workdir=runs/litv2_s

Expected top-1: 82.0 (official README).
"""

from configs import lit_s


def get_config():
  config = lit_s.get_config()
  config.model = 'litv2_s'
  config.drop_path_rate = 0.2
  return config
