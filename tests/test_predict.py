"""predict: top-5 ImageNet classes for a JPEG, through a converted checkpoint."""

import numpy as np
import pytest
from PIL import Image

from mvitv2_jax import convert
from mvitv2_jax import predict
from mvitv2_jax.data import imagenet
from mvitv2_jax.model import variants
from tests.helpers import golden

DATA = golden.DIR
TINY = dict(golden.TINY, num_classes=1000)
MEAN, STD = np.array(imagenet.MEAN_RGB), np.array(imagenet.STDDEV_RGB)


def test_class_names_come_from_tfds():
  names = imagenet.class_names()
  assert len(names) == 1000
  assert names[0] == 'tench, Tinca tinca (n01440764)'
  assert names[999].endswith('(n15075141)')


def test_eval_transform_resizes_short_side_and_center_crops(tmp_path):
  path = tmp_path / 'wide.png'
  pixels = np.zeros((50, 100, 3), np.uint8)
  pixels[:, 45:55] = 255  # A white bar in the middle survives the center crop.
  Image.fromarray(pixels).save(path)
  image = predict.load_image(str(path), 32, 0.875)
  assert image.shape == (32, 32, 3) and image.dtype == np.float32
  white = (1.0 - MEAN) / STD
  np.testing.assert_allclose(image[16, 16], white, atol=0.05)
  np.testing.assert_allclose(image[16, 0], -MEAN / STD, atol=0.05)


def test_predict_prints_top5_for_a_jpeg(tmp_path, capsys):
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(variants._VARIANTS, 'mvitv2_test_tiny', TINY)
    checkpoint = tmp_path / 'ckpt'
    # A 1000-class tiny model: the golden tiny weights with a fresh ImageNet-sized head.
    assert convert.main([str(DATA / 'tiny.pyth'), str(checkpoint), '--model', 'mvitv2_test_tiny',
                         '--drop-head']) == 0
    rng = np.random.default_rng(0)
    jpeg = tmp_path / 'photo.jpg'
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(jpeg)
    capsys.readouterr()
    assert predict.main(['--model', 'mvitv2_test_tiny', '--checkpoint', str(checkpoint),
                         '--image_size', '64', str(jpeg)]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == str(jpeg)
  assert len(lines) == 6
  probs = [float(line.split('%')[0]) for line in lines[1:]]
  assert probs == sorted(probs, reverse=True) and all(0 <= p <= 100 for p in probs)
  assert all('(n' in line for line in lines[1:])
