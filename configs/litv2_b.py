"""LITv2-B on ImageNet-1K from scratch (the LIT recipe of configs/lit_s.py).

  python main.py --config=configs/litv2_b.py --workdir=runs/litv2_b

Expected top-1: 83.6 (official README).
"""

from configs import lit_s


def get_config():
  config = lit_s.get_config()
  config.model = 'litv2_b'
  config.drop_path_rate = 0.5
  return config
