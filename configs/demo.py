"""A small MViTv2 on the built-in `mvitv2_demo_shapes` data: a laptop-CPU demo.

  python main.py --config=configs/demo.py --workdir=/tmp/demo

Ten classes of procedural shapes at 64x64 (built by TFDS on first use, a few
seconds, no download). Float32 on CPU, light augmentation, no mixup. Chance is
10% top-1; see the eval lines in the log and TensorBoard in the workdir.
On a 2-core CPU: 2-4.5 minutes, top-1 60-65% after one epoch.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'mvitv2_demo'
  config.num_classes = 10
  config.image_size = 64
  config.drop_path_rate = 0.0
  config.dtype = 'float32'  # bf16 is slow on CPUs.

  config.dataset = 'mvitv2_demo_shapes'
  config.batch_size = 64
  config.eval_batch_size = 250
  config.shuffle_buffer = 2048

  config.aug.randaugment_num_ops = 2
  config.aug.random_erase_prob = 0.0
  config.aug.mixup_alpha = 0.0
  config.aug.cutmix_alpha = 0.0

  config.optim.base_lr = 8e-3  # 2e-3 at batch 64.
  config.optim.warmup_epochs = 0.2
  config.num_epochs = 1  # 156 steps.
  config.log_every_steps = 20
  config.eval_every_steps = 52
  config.checkpoint_every_steps = 52
  return config
