"""LIT-S on ImageNet-1K from scratch: the LIT recipe, the base of lit_{m,b} and litv2_{s,m,b}.

  python main.py --config=configs/lit_s.py --workdir=runs/lit_s

Meant for one 8-GPU node or a TPU v4-8 and up; batch 1024 global. Expected top-1: 81.5
(official README). The recipe is the official Swin-based trainer's (ziplab/LIT
classification/code_for_lit_s_m_b: config.py, configs/lit-*.yaml, optimizer.py; LITv2's
is the same code): AdamW, lr 5e-4 per 512 images, 20 warmup epochs from 5e-7 per 512,
cosine to 5e-6 per 512, weight decay 0.05 on all but 1-D params and the relative
position bias tables, gradient clipping at norm 5, rand-m9-mstd0.5-inc1, random erasing
0.25, mixup 0.8 / cutmix 1.0, label smoothing 0.1, eval crop 224/256, drop path 0.2
(S), 0.3 (M), 0.5 (B). The offset convs' weights train at 0.01x (`OFFSET_LR_MULTI`: the
family's learning-rate multipliers).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'lit_s'
  config.drop_path_rate = 0.2
  config.batch_size = 1024  # 8 GPUs x 128.

  config.aug.randaugment_num_ops = 2  # timm's rand-m9-mstd0.5-inc1: two ops.
  config.optim.base_lr = 2.5e-4  # 5e-4 per 512.
  config.optim.warmup_start_lr = 2.5e-7
  config.optim.min_lr = 2.5e-6
  config.optim.warmup_epochs = 20.0
  config.optim.grad_clip_norm = 5.0
  config.optim.no_decay_rel_pos_cls = True  # no_weight_decay_keywords: the rel-pos tables.
  return config
