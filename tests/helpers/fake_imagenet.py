"""Builds a tiny `imagenet2012` in the real TFDS format, for tests only.

Writes the two archives the installed builder reads from its manual dir (a train
tar of per-class `nXXXXXXXX.tar` tars of JPEGs, and a flat validation tar), then
runs the real `imagenet2012` builder on them.
"""

import io
import os
import tarfile

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

DEFAULT_CLASSES = ('n01440764', 'n01443537', 'n01484850')


def _jpeg(rng: np.random.Generator, size: tuple[int, int]) -> bytes:
  width, height = size
  # Smooth colour gradients plus noise: compresses like a photo, unlike pure noise.
  base = rng.uniform(0, 255, size=(2, 2, 3))
  image = np.asarray(Image.fromarray(base.astype(np.uint8)).resize(size, Image.BILINEAR),
                     np.float32)
  image += rng.normal(0, 20, size=image.shape)
  buffer = io.BytesIO()
  Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, 'JPEG', quality=85)
  return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_archives(manual_dir: str, *, num_train_per_class: int = 4,
                   classes: tuple[str, ...] = DEFAULT_CLASSES, num_validation: int = 5,
                   image_size: tuple[int, int] = (40, 30), seed: int = 0,
                   replace: dict[str, bytes] | None = None) -> None:
  """Writes ImageNet's two archives of fake JPEGs into `manual_dir`.

  Args:
    manual_dir: where the archives go.
    num_train_per_class: train images per class.
    classes: WordNet ids of the train classes (names from TFDS's labels.txt).
    num_validation: validation images. Their labels are fixed by TFDS's
      validation_labels.txt (first lines, in file-name order), not by `classes`.
    image_size: (width, height) of every JPEG.
    seed: NumPy seed for the pixels.
    replace: {image file name: bytes to store instead} (e.g. broken files).
  """
  rng = np.random.default_rng(seed)
  replace = replace or {}
  os.makedirs(manual_dir, exist_ok=True)

  def image(name):
    data = _jpeg(rng, image_size)
    return replace.get(name, data)

  with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_train.tar'), 'w') as train:
    for synset in classes:
      class_tar = io.BytesIO()
      with tarfile.open(fileobj=class_tar, mode='w') as inner:
        for i in range(num_train_per_class):
          _add(inner, f'{synset}_{i}.JPEG', image(f'{synset}_{i}.JPEG'))
      _add(train, f'{synset}.tar', class_tar.getvalue())
  with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_val.tar'), 'w') as val:
    for i in range(1, num_validation + 1):
      name = f'ILSVRC2012_val_{i:08d}.JPEG'
      _add(val, name, image(name))


def make_fake_imagenet(data_dir: str, *, num_train_per_class: int = 4,
                       classes: tuple[str, ...] = DEFAULT_CLASSES,
                       num_validation: int = 5,
                       image_size: tuple[int, int] = (40, 30),
                       seed: int = 0) -> None:
  """Prepares `imagenet2012` with fake JPEGs under `data_dir` (`write_archives`'s args)."""
  manual_dir = os.path.join(data_dir, 'downloads', 'manual')
  write_archives(manual_dir, num_train_per_class=num_train_per_class, classes=classes,
                 num_validation=num_validation, image_size=image_size, seed=seed)
  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
