"""Every training field, with the official MViTv2 ImageNet-1K recipe as defaults.

The per-variant configs (`configs/mvitv2_{t,s,b,l,h}.py`) import this and override
what differs. Batch sizes are global. Derived quantities (steps per epoch, the
learning rate scaled by batch size) are computed by the trainer (`main.py` runs
`mvitv2_jax/train/`: `programs.py` and `optim.py`), not stored here.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()

  # Model.
  config.model = 'mvitv2_s'  # A name known to `models.create_model`.
  config.num_classes = 1000
  config.image_size = 224  # Train and eval crop; also the size the model is built for.
  config.drop_path_rate = 0.1
  config.dtype = 'bfloat16'  # Compute dtype; params stay float32.
  # Options passed to `models.create_model` on top of the above (e.g. cls_residual_q).
  config.model_overrides = ml_collections.ConfigDict()

  # Data.
  config.dataset = 'imagenet2012'  # TFDS name.
  config.data_dir = ''  # '' means TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.batch_size = 2048  # Global, over all hosts and devices.
  config.eval_batch_size = 1024
  config.shuffle_buffer = 16_384
  config.eval_crop_pct = 0.875  # Resize to image_size / crop_pct, then center-crop (official).
  # Example counts used when TFDS metadata has none (e.g. under tfds.testing.mock_data).
  config.num_train_examples = -1
  config.num_eval_examples = -1

  # Augmentation (train only).
  config.aug = ml_collections.ConfigDict()
  config.aug.min_crop_scale = 0.08  # RandomResizedCrop scale range (min, 1.0).
  config.aug.flip = True
  config.aug.randaugment_num_ops = 6  # rand-m9-n6-mstd0.5-inc1; 0 disables RandAugment.
  config.aug.randaugment_magnitude = 9.0
  config.aug.randaugment_magnitude_std = 0.5
  config.aug.random_erase_prob = 0.25
  config.aug.mixup_alpha = 0.8  # 0 disables mixup.
  config.aug.cutmix_alpha = 1.0  # 0 disables cutmix.
  config.aug.mixup_prob = 1.0  # Probability of applying mixup or cutmix to a batch.
  config.aug.cutmix_switch_prob = 0.5  # Probability of cutmix rather than mixup.
  config.aug.label_smoothing = 0.1

  # Optimizer and schedule (official: AdamW, lr 2.5e-4 per 256 images).
  config.optim = ml_collections.ConfigDict()
  config.optim.name = 'adamw'  # Or 'sgd' (Nesterov momentum, L2 decay: PySlowFast's SSv2).
  config.optim.momentum = 0.9  # SGD only.
  config.optim.base_lr = 2.5e-4  # Per 256 images: lr = base_lr * batch_size / 256.
  config.optim.warmup_start_lr = 1e-8  # Per 256 images, like base_lr.
  config.optim.min_lr = 1e-6  # Per 256 images: the cosine ends here.
  config.optim.warmup_epochs = 70.0
  config.optim.weight_decay = 0.05
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.grad_clip_norm = 1.0  # 0 disables clipping.
  # Official: no decay on 1-D params (norms, biases) only; rel-pos tables and the cls token
  # are decayed. True excludes them too, as timm does.
  config.optim.no_decay_rel_pos_cls = False
  config.optim.grad_accum_steps = 1  # Micro-batches per update; batch_size stays the update size.
  # > 0: also keep an exponential moving average of the variables (timm's ModelEma, updated
  # after every update), evaluate it beside them and keep it in best/. MViTv2's recipe has none.
  config.optim.ema_decay = 0.0

  # Schedule of the run.
  config.mode = 'train'  # 'train' or 'eval'.
  config.init_from = ''  # Converted (orbax) or PyTorch checkpoint, or pretrained:NAME.
  config.init_drop_head = False  # With init_from: re-initialise the head (new label set).
  config.init_inflate = False  # With init_from: an image checkpoint for a video model.
  config.num_epochs = 300
  config.num_train_steps = -1  # -1: derive from num_epochs.
  config.seed = 0
  config.log_every_steps = 100
  config.eval_every_steps = -1  # -1: once per epoch.
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3

  # Sharding: the batch is split on a 'data' mesh axis over every device of every host.
  config.shard_params = False  # FSDP-style: shard params and optimizer state over 'data'.
  return config


def scan_blocks_with_remat(config: ml_collections.ConfigDict) -> None:
  """For the deep models: each run of identical blocks one scanned, rematerialised block.

  A scan keeps compile time flat in depth. XLA cannot rematerialise across its loop, so
  each block keeps only its dense layers' outputs for the backward pass and recomputes
  the rest; docs/performance.md has the memory this plan takes per chip.
  """
  config.model_overrides.scan_blocks = True
  config.model_overrides.remat = True
  config.model_overrides.remat_policy = 'dots_with_no_batch_dims_saveable'
