"""A tiny video MViTv2 on the built-in `mvitv2_demo_motion` data: a laptop-CPU demo.

  python main.py --config=configs/video/demo.py --workdir=/tmp/vdemo

Eight classes of textures sliding left/right/up/down, slowly or fast, 16 frames at
32x32 (built by TFDS on first use, seconds, no download): a single frame cannot tell
them apart, so what the model learns is motion. The Kinetics recipe's pipeline at a
small scale: 8-frame clips, 2 clips per video, 2 test clips per video; no flip (it
would swap left and right), no RandAugment or mixup. Chance is 12.5% top-1.
"""

from configs.video import kinetics


def get_config():
  config = kinetics.get_config()
  config.model = 'mvitv2_s_16x4'
  config.model_overrides.num_frames = 8
  config.model_overrides.embed_dim = 32
  config.model_overrides.depths = (1, 1, 2, 1)
  config.model_overrides.kv_stride = (1, 4, 4)
  # Spatial pooling windows: on a CPU, 3-D ones cost minutes of compilation.
  config.model_overrides.pool_kernel = (1, 3, 3)
  config.model_overrides.head_dropout_rate = 0.0
  config.num_classes = 8
  config.image_size = 32
  config.drop_path_rate = 0.0
  config.dtype = 'float32'  # bf16 is slow on CPUs.

  config.dataset = 'mvitv2_demo_motion/small'
  config.batch_size = 32  # 16 videos x 2 clips.
  config.eval_batch_size = 50
  config.shuffle_buffer = 2000
  config.video.sampling_rate = 1
  config.video.eval_clips = 2

  config.aug.min_crop_scale = 0.5
  config.aug.flip = False
  config.aug.randaugment_num_ops = 0
  config.aug.random_erase_prob = 0.0
  config.aug.mixup_alpha = 0.0
  config.aug.cutmix_alpha = 0.0

  config.optim.base_lr = 3.2e-2  # 4e-3 at batch 32.
  config.optim.warmup_start_lr = 1e-6
  config.optim.min_lr = 1e-5
  config.optim.warmup_epochs = 0.2
  config.num_epochs = 1  # 125 steps.
  config.log_every_steps = 25
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  return config
