"""MViTv2-B on ImageNet-1K from scratch (official recipe).

  python main.py --config=configs/mvitv2_b.py --workdir=runs/mvitv2_b

Meant for one or two 8-GPU (A100/H100-class) nodes or a TPU v4-16; batch 2048 global.
Expected top-1: 84.4 (official README, 300 epochs at 224).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'mvitv2_b'
  config.drop_path_rate = 0.3
  return config
