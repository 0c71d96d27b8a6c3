"""The PySlowFast Kinetics recipe of MViTv2 (`configs/Kinetics/MVITv2_S_16x4.yaml`).

The per-model video configs import this and override what differs. Batches count
clips: a video gives `video.num_sample` differently augmented clips (the yaml's
AUG.NUM_SAMPLE). Learning rates are per 256 clips, as for images: the yaml's BASE_LR
1e-4 is for one shard's TRAIN.BATCH_SIZE 16 videos x NUM_SAMPLE 2 = 32 clips, scaled
linearly with the shards (BASE_LR_SCALE_NUM_SHARDS), so 8e-4 per 256 clips; so are
WARMUP_START_LR and COSINE_END_LR (1e-6 per 32 clips: 8e-6 per 256).
"""

import ml_collections

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'mvitv2_s_16x4'  # The model's num_frames is the clip length T.
  config.num_classes = 400
  config.image_size = 224  # TRAIN_CROP_SIZE and TEST_CROP_SIZE.
  config.drop_path_rate = 0.2  # Head dropout 0.5 is the video variants' default.

  # Data: Kinetics-400 as JPEG frames (README "Training on video").
  config.dataset = 'mvitv2_video_frames/kinetics400'
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.batch_size = 256  # Clips: 128 videos x num_sample 2 (8 PySlowFast shards).
  config.eval_batch_size = 64  # Videos, each with all its views.
  config.shuffle_buffer = 256  # Videos are large; files are shuffled too.

  config.video = ml_collections.ConfigDict()
  config.video.video_key = 'video'  # The dataset's `tfds.features.Video` feature.
  config.video.label_key = 'label'
  config.video.sampling = 'stride'  # T frames every `sampling_rate` ('segments': SSv2).
  config.video.sampling_rate = 4
  config.video.num_sample = 2  # Repeated augmentation: clips made of each decoded video.
  config.video.eval_clips = 5  # TEST.NUM_ENSEMBLE_VIEWS, uniformly spaced.
  config.video.eval_crops = 1  # TEST.NUM_SPATIAL_CROPS (1: centre, 3: along the long side).

  config.aug.min_crop_scale = 0.08  # TRAIN_JITTER_SCALES_RELATIVE; aspect 3/4-4/3.
  config.aug.flip = True
  config.aug.randaugment_num_ops = 4  # rand-m7-n4-mstd0.5-inc1.
  config.aug.randaugment_magnitude = 7.0
  config.aug.randaugment_magnitude_std = 0.5
  config.aug.random_erase_prob = 0.25
  config.aug.mixup_alpha = 0.8
  config.aug.cutmix_alpha = 1.0
  config.aug.mixup_prob = 1.0
  config.aug.cutmix_switch_prob = 0.5
  config.aug.label_smoothing = 0.1

  config.optim.name = 'adamw'
  config.optim.base_lr = 8e-4  # Per 256 clips (see above).
  config.optim.warmup_start_lr = 8e-6
  config.optim.min_lr = 8e-6  # COSINE_END_LR.
  config.optim.warmup_epochs = 30.0
  config.optim.weight_decay = 0.05
  config.optim.grad_clip_norm = 1.0
  config.optim.no_decay_rel_pos_cls = False  # ZERO_DECAY_POS_CLS False, ZERO_WD_1D_PARAM.
  config.num_epochs = 200
  return config
