"""configs/demo.py with a small LITv2 (deformable token merging with BatchNorm, HiLo
attention).

  python main.py --config=configs/demo_lit.py --workdir=/tmp/demo_lit

The same data, recipe and schedule as the MViTv2 demo; chance is 10% top-1.
"""

from configs import demo


def get_config():
  config = demo.get_config()
  config.model = 'litv2_demo'
  config.num_epochs = 3  # 468 steps: it learns more slowly than the MViTv2 in one epoch.
  config.eval_every_steps = 156
  config.checkpoint_every_steps = 156
  return config
