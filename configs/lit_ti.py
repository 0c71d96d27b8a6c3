"""LIT-Ti on ImageNet-1K from scratch (official recipe).

  python main.py --config=configs/lit_ti.py --workdir=runs/lit_ti

Meant for one 8-GPU node or a TPU v4-8 and up; batch 1024 global. Expected top-1: 81.1
(official README). The recipe is the official DeiT-based trainer's (ziplab/LIT
classification/code_for_lit_ti: params.py, config/lit-ti.json, main.py): AdamW, lr 5e-4
per 512 images (the warmup start 1e-6 and the end 1e-5 are not scaled by batch), 5
warmup epochs, weight decay 0.05 on all but 1-D params and the class token, no gradient
clipping, rand-m9-mstd0.5-inc1, random erasing 0.25, mixup 0.8 / cutmix 1.0, label
smoothing 0.1, eval crop 224/256, drop path 0.1. The offset convs' weights train at 0.01x
(`dconv_lr_ratio`: the family's learning-rate multipliers). NOTE: the position
embeddings are decayed there and the class token is not; `no_decay_rel_pos_cls` exempts
all or none of them, so here all are decayed. timm's scheduler there steps once per
epoch and adds 10 cooldown epochs at the final rate; ours is per step over 300 epochs.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'lit_ti'
  config.drop_path_rate = 0.1
  config.batch_size = 1024  # 8 GPUs x 128.

  config.aug.randaugment_num_ops = 2  # timm's rand-m9-mstd0.5-inc1: two ops.
  config.optim.base_lr = 2.5e-4  # 5e-4 per 512.
  config.optim.warmup_start_lr = 2.5e-7  # 1e-6 at batch 1024.
  config.optim.min_lr = 2.5e-6  # 1e-5 at batch 1024.
  config.optim.warmup_epochs = 5.0
  config.optim.grad_clip_norm = 0.0
  return config
