"""ResT-Lite on ImageNet-1K from scratch: the ResT (v1) recipe, the base of rest_{small,base,large}.

  python main.py --config=configs/rest_lite.py --workdir=runs/rest_lite

Meant for one 8-GPU node or a TPU v4-8 and up; batch 2048 global. Expected top-1: 77.2
(official README). The recipe is the official DeiT-based trainer's (wofmanaf/ResT at
537086d: main.py defaults, get_started.md commands): AdamW, lr 5e-4 per 512 images,
5 warmup epochs from 1e-6 per 512, cosine to 1e-5 per 512, weight decay 0.05 on all but
1-D params, gradient clipping at norm 5, rand-m9-mstd0.5-inc1, random erasing 0.25,
mixup 0.8 / cutmix 1.0, label smoothing 0.1, eval crop 224/256, drop path 0.1 (Lite,
S), 0.2 (B), 0.3 (L). NOTE: timm's scheduler there steps once per epoch and adds 10
cooldown epochs at the final rate; ours is per step over the 300 epochs.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'rest_lite'
  config.drop_path_rate = 0.1
  config.batch_size = 2048  # 8 GPUs x 256.

  config.aug.randaugment_num_ops = 2  # timm's rand-m9-mstd0.5-inc1: two ops.
  config.optim.base_lr = 2.5e-4  # 5e-4 per 512.
  config.optim.warmup_start_lr = 5e-7
  config.optim.min_lr = 5e-6
  config.optim.warmup_epochs = 5.0
  config.optim.grad_clip_norm = 5.0
  return config
