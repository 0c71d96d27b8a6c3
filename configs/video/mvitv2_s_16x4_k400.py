"""MViTv2-S 16x4 on Kinetics-400: PySlowFast's `configs/Kinetics/MVITv2_S_16x4.yaml`.

  python main.py --config=configs/video/mvitv2_s_16x4_k400.py --workdir=runs/s16x4_k400

Published: 81.0 top-1 (5 x 1 views). Fine-tune from ImageNet weights with
`--config.init_from=MViTv2_S_in1k.pyth --config.init_inflate=True --config.init_drop_head=True`.
"""

from configs.video import kinetics


def get_config():
  return kinetics.get_config()
