"""MViTv2-T on ImageNet-1K from scratch (official recipe).

  python main.py --config=configs/mvitv2_t.py --workdir=runs/mvitv2_t

Meant for one 8-GPU (A100/H100-class) node or a TPU v4-8 and up; batch 2048 global.
Expected top-1: 82.3 (official README, 300 epochs at 224).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'mvitv2_t'
  config.drop_path_rate = 0.1
  return config
