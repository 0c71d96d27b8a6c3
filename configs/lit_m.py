"""LIT-M on ImageNet-1K from scratch (the LIT recipe of configs/lit_s.py).

  python main.py --config=configs/lit_m.py --workdir=runs/lit_m

Expected top-1: 83.0 (official README).
"""

from configs import lit_s


def get_config():
  config = lit_s.get_config()
  config.model = 'lit_m'
  config.drop_path_rate = 0.3
  return config
