"""ResTv2-T on ImageNet-1K from scratch (official recipe).

  python main.py --config=configs/restv2_tiny.py --workdir=runs/restv2_tiny

Meant for one 8-GPU node or a TPU v4-8 and up; batch 2048 global. Expected top-1: 82.3
(official README, evaluated on the EMA weights). The recipe is the official
ConvNeXt-based trainer's (wofmanaf/ResT TRAINING.md and main.py): AdamW, lr 1.5e-4 per
256 images, 50 warmup epochs from 0, cosine to 1e-6 (not scaled by batch), weight decay
0.05 on all but 1-D params, gradient clipping at norm 1, rand-m9-mstd0.5-inc1, random
erasing 0.25, mixup 0.8 / cutmix 1.0, label smoothing 0.1, drop path 0.1, eval crop 1.0
(`--crop_pct` default), and a moving average of the weights and BatchNorm statistics at
decay 0.9999 (`--model_ema true --model_ema_eval true`), evaluated beside them, reported,
and kept in best/. TRAINING.md gives the command of the Tiny only, so the other ResTv2
variants have no config here.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'restv2_tiny'
  config.drop_path_rate = 0.1
  config.batch_size = 2048  # 8 GPUs x 256.
  config.eval_crop_pct = 1.0

  config.aug.randaugment_num_ops = 2  # timm's rand-m9-mstd0.5-inc1: two ops.
  config.optim.base_lr = 1.5e-4
  config.optim.warmup_start_lr = 0.0
  config.optim.min_lr = 1.25e-7  # 1e-6 at batch 2048.
  config.optim.warmup_epochs = 50.0
  config.optim.grad_clip_norm = 1.0
  config.optim.ema_decay = 0.9999
  return config
