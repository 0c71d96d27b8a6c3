"""MViTv2-S 16x4 on Something-Something v2: PySlowFast's `configs/SSv2/MVITv2_S_16x4.yaml`.

Segment sampling (one frame from each of 16 equal segments: INV_UNIFORM_SAMPLE), no
flip (left/right labels), one clip per video, 1 x 3 test views, SGD. As in PySlowFast,
start from a Kinetics-400 checkpoint: `--config.init_from=ckpt/mvitv2_s_16x4
--config.init_drop_head=True`. Learning rates per 256 clips: the yaml's are per one
shard's 16 clips (NUM_SAMPLE 1), times the shards: 0.0025 -> 0.04, warmup start
1e-4 -> 1.6e-3, end 1e-6 -> 1.6e-5.
"""

from configs.video import kinetics


def get_config():
  config = kinetics.get_config()
  config.num_classes = 174
  config.dataset = 'mvitv2_video_frames/ssv2'
  config.drop_path_rate = 0.4
  config.batch_size = 128  # Clips = videos: 8 shards of 16.
  config.video.sampling = 'segments'
  config.video.num_sample = 1
  config.video.eval_clips = 1
  config.video.eval_crops = 3
  config.aug.flip = False

  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  config.optim.base_lr = 0.04
  config.optim.warmup_start_lr = 1.6e-3
  config.optim.min_lr = 1.6e-5
  config.optim.warmup_epochs = 3.0
  config.optim.weight_decay = 1e-4
  config.optim.grad_clip_norm = 0.0  # The yaml sets no clipping.
  config.num_epochs = 100
  return config
