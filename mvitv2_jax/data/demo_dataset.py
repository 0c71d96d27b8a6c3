"""`mvitv2_demo_shapes`: a small procedural image-classification dataset.

Ten classes of coloured shapes and textures on noisy backgrounds at 64x64, drawn
with NumPy from a fixed seed, so the whole trainer can be exercised without any
download. Images are stored as JPEG bytes so that the input pipeline takes the
same fused decode-and-crop path as on ImageNet. Importing this module registers
the builder with TFDS; `download_and_prepare` takes a few seconds.
"""

import numpy as np
import tensorflow_datasets as tfds

from mvitv2_jax.data import jpeg

IMAGE_SIZE = 64
CLASS_NAMES = (
    'disc', 'square', 'triangle', 'ring', 'cross', 'horizontal_stripes',
    'vertical_stripes', 'diagonal_stripes', 'checkerboard', 'dots',
)
_NUM_EXAMPLES = {'train': 10_000, 'validation': 1_000}
_SEEDS = {'train': 0, 'validation': 1}


def _shape_mask(label: int, rng: np.random.Generator) -> np.ndarray:
  """Returns a float mask [IMAGE_SIZE, IMAGE_SIZE] in [0, 1] for one class."""
  yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE].astype(np.float32)
  radius = rng.uniform(10, 24)
  cy, cx = rng.uniform(radius, IMAGE_SIZE - radius, size=2)
  dy, dx = yy - cy, xx - cx
  period = rng.uniform(5, 12)
  phase = rng.uniform(0, period)
  name = CLASS_NAMES[label]
  if name == 'disc':
    mask = dy**2 + dx**2 < radius**2
  elif name == 'square':
    mask = (np.abs(dy) < radius * 0.8) & (np.abs(dx) < radius * 0.8)
  elif name == 'triangle':
    # Upward triangle: below the apex and inside the two slanted edges.
    mask = (dy < radius * 0.7) & (np.abs(dx) < (dy + radius) * 0.6)
  elif name == 'ring':
    dist = np.sqrt(dy**2 + dx**2)
    mask = (dist < radius) & (dist > radius * 0.55)
  elif name == 'cross':
    arm = radius * 0.3
    inside = (np.abs(dy) < radius) & (np.abs(dx) < radius)
    mask = inside & ((np.abs(dy) < arm) | (np.abs(dx) < arm))
  elif name == 'horizontal_stripes':
    mask = ((yy + phase) % period) < period / 2
  elif name == 'vertical_stripes':
    mask = ((xx + phase) % period) < period / 2
  elif name == 'diagonal_stripes':
    mask = ((xx + yy + phase) % period) < period / 2
  elif name == 'checkerboard':
    mask = (((yy + phase) // period + (xx + phase) // period) % 2) == 0
  else:  # dots
    dist_y = (yy + phase) % period - period / 2
    dist_x = (xx + phase) % period - period / 2
    mask = dist_y**2 + dist_x**2 < (period * 0.3)**2
  return mask.astype(np.float32)


def make_example(label: int, rng: np.random.Generator) -> np.ndarray:
  """Draws one image of class `label`.

  Args:
    label: class index in [0, 10).
    rng: NumPy generator the image is drawn from.

  Returns:
    uint8 array [IMAGE_SIZE, IMAGE_SIZE, 3].
  """
  mask = _shape_mask(label, rng)[..., None]
  background = rng.uniform(0, 255, size=3)
  # Keep the foreground visibly different from the background.
  foreground = (background + rng.uniform(80, 175, size=3)) % 256
  image = background * (1 - mask) + foreground * mask
  image += rng.normal(0, 12, size=image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


class MViTv2DemoShapes(tfds.core.GeneratorBasedBuilder):
  """Procedural 10-class shapes and textures, 64x64 JPEG, no download."""

  name = 'mvitv2_demo_shapes'  # The class-name default would be 'm_vi_tv2_...'.
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(
                shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in _NUM_EXAMPLES}

  def _generate_examples(self, split):
    rng = np.random.default_rng(_SEEDS[split])
    for index in range(_NUM_EXAMPLES[split]):
      # Balanced classes; the shuffle at read time mixes them.
      label = index % len(CLASS_NAMES)
      yield index, {
          'image': jpeg.encode(make_example(label, rng)),
          'label': label,
      }
