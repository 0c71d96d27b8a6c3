"""MViTv2-L 40x3 at 312 px on Kinetics-400: PySlowFast's `MVITv2_L_40x3_test.yaml`.

Published: 86.1 top-1 with IN-21K pre-training, 5 temporal clips x 3 spatial crops.
The yaml is a test config: for training it gives only the model, drop path, crop and
augmentation; the rest is the S/B recipe. Blocks are rematerialised (ACT_CHECKPOINT).
Evaluate converted weights:
  python main.py --config=configs/video/mvitv2_l_40x3_k400.py --config.mode=eval \\
      --config.init_from=ckpt/mvitv2_l_40x3
"""

from configs.video import kinetics


def get_config():
  config = kinetics.get_config()
  config.model = 'mvitv2_l_40x3'
  config.image_size = 312
  config.video.sampling_rate = 3
  config.video.eval_crops = 3
  config.drop_path_rate = 0.75
  config.model_overrides.remat = True
  config.eval_batch_size = 8  # Videos of 15 views each.
  return config
