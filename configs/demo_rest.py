"""configs/demo.py with a small ResTv2 (BatchNorm in its stem and patch embeddings).

  python main.py --config=configs/demo_rest.py --workdir=/tmp/demo_rest

The same data, recipe and schedule as the MViTv2 demo; chance is 10% top-1.
"""

from configs import demo


def get_config():
  config = demo.get_config()
  config.model = 'restv2_demo'
  config.num_epochs = 3  # 468 steps: it learns more slowly than the MViTv2 in one epoch.
  config.eval_every_steps = 156
  config.checkpoint_every_steps = 156
  return config
