"""`mvitv2_demo_motion`: a small procedural video dataset whose classes differ only in motion.

Each video is a random smooth colour texture sliding across the frame (wrapping around
its edges), with pixel noise. The class is the direction (left, right, up, down) and speed
(slow: 1, fast: 3 pixels per frame at 32 px); texture, position and noise are drawn alike
for every class, so any single frame has the same distribution in all classes and only
the motion tells them apart. Frames
are stored as JPEGs in a `tfds.features.Video`, as the prepared Kinetics data is, and the
dataset builds on first use in seconds, with no download. Importing this module
registers the builder with TFDS.

Configs: `small` (the demo: 32x32, 16 frames), `large` (a few 256x320 videos of 64
frames, for timing the input pipeline at Kinetics sizes) and `tiny` (tests).
"""

import dataclasses

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from mvitv2_jax.data import jpeg

DIRECTIONS = {'left': (0, -1), 'right': (0, 1), 'up': (-1, 0), 'down': (1, 0)}
SPEEDS = {'slow': 1.0, 'fast': 3.0}  # Pixels per frame at 32 px; scaled with the frame.
CLASS_NAMES = tuple(f'{d}_{s}' for s in SPEEDS for d in DIRECTIONS)
_SEEDS = {'train': 0, 'validation': 1}


@dataclasses.dataclass
class MotionConfig(tfds.core.BuilderConfig):
  height: int = 32
  width: int = 32
  num_frames: int = 16
  num_train: int = 2000
  num_validation: int = 250


def motion(label: int) -> tuple[np.ndarray, float]:
  """(unit direction (dy, dx), speed at 32 px) of class `label`."""
  direction, speed = CLASS_NAMES[label].split('_')
  return np.array(DIRECTIONS[direction], np.float32), SPEEDS[speed]


def make_video(label: int, rng: np.random.Generator, *, height: int = 32, width: int = 32,
               num_frames: int = 16) -> np.ndarray:
  """Draws one video of class `label`: a random smooth texture sliding as the class says.

  Args:
    label: class index in [0, len(CLASS_NAMES)).
    rng: NumPy generator the video is drawn from (the same draws for every class).
    height: frame height.
    width: frame width.
    num_frames: frames of the video.

  Returns:
    uint8 [num_frames, height, width, 3].
  """
  direction, speed = motion(label)
  step = int(round(speed * min(height, width) / 32))  # Whole pixels per frame.
  coarse = rng.uniform(0, 255, size=(8, 8, 3)).astype(np.uint8)
  texture = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
  offset = rng.integers(0, [height, width])
  frames = []
  for t in range(num_frames):
    # The texture wraps around the frame edges as it slides.
    shift = offset + (direction * step * t).astype(int)
    frame = np.roll(texture, tuple(shift), axis=(0, 1)).astype(np.float32)
    frames.append(frame + rng.normal(0, 8, size=frame.shape))
  return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


class MViTv2DemoMotion(tfds.core.GeneratorBasedBuilder):
  """Procedural 8-class sliding textures (direction x speed), JPEG frames, no download."""

  name = 'mvitv2_demo_motion'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      MotionConfig(name='small', description='32x32, 16 frames: the demo.'),
      MotionConfig(name='large', description='256x320, 64 frames: input timing.',
                   height=256, width=320, num_frames=64, num_train=32, num_validation=8),
      MotionConfig(name='tiny', description='The small videos, few of them: tests.',
                   num_train=40, num_validation=21),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Video(
                shape=(c.num_frames, c.height, c.width, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=('video', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    c = self.builder_config
    sizes = {'train': c.num_train, 'validation': c.num_validation}
    return {split: self._generate_examples(split, n) for split, n in sizes.items()}

  def _generate_examples(self, split, num_examples):
    c = self.builder_config
    rng = np.random.default_rng(_SEEDS[split])
    for index in range(num_examples):
      label = index % len(CLASS_NAMES)  # Balanced; the shuffle at read time mixes them.
      video = make_video(label, rng, height=c.height, width=c.width, num_frames=c.num_frames)
      yield index, {'video': [jpeg.encode(frame) for frame in video], 'label': label}
