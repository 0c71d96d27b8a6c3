"""predict: top-5 ImageNet classes for a JPEG, through a converted checkpoint; bad input."""

import io
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from PIL import ImageOps
import tensorflow as tf

from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax import predict
from mvitv2_jax.data import imagenet
from tests.helpers import golden
from tests.helpers import hostile_files
from tests.helpers import limited
from tests.helpers import training
from tests.helpers import variants

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
    variants.register(mp, 'mvitv2_test_tiny', TINY)
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


@pytest.mark.parametrize('value,expected', [(1000, 4), (32896, 128), (65535, 255)])
def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path, value, expected):
  path = tmp_path / 'gray16.png'
  Image.fromarray(np.full((32, 32), value, np.uint16)).save(path)
  image = predict.load_image(str(path), 32, 1.0)
  np.testing.assert_allclose(image, np.broadcast_to((expected / 255 - MEAN) / STD, image.shape),
                             atol=1e-5)


@pytest.mark.parametrize('flags,message', [
    (['--crop_pct', '0'], 'argument --crop_pct/--crop-pct: 0.0 is not in (0.0, 1.0]'),
    (['--crop_pct', '1.5'], 'argument --crop_pct/--crop-pct: 1.5 is not in (0.0, 1.0]'),
    (['--image_size', '0'], 'argument --image_size/--image-size: 0 is not in [1, inf]'),
    (['--image_size', '100'],
     'argument --image_size/--image-size: mvitv2_t needs a multiple of 32, not 100'),
    (['--top_k', '-3'], 'argument --top_k/--top-k: -3 is not in [1, inf]'),
    (['--top_k', '1001'], 'argument --top_k/--top-k: 1001 is more than the 1000 classes'),
    (['--max_pixels', '0'], 'argument --max_pixels/--max-pixels: 0 is not in [1, 178956970]'),
    (['--model', 'mvitv2_x'], "argument --model: invalid choice: 'mvitv2_x'"),
])
def test_bad_arguments_are_argparse_errors(capsys, flags, message):
  with pytest.raises(SystemExit) as info:
    predict.main(['--model', 'mvitv2_t', '--checkpoint', 'unused', *flags, 'unused.jpg'])
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert message in err and 'Traceback' not in err


def _jpeg_bytes(pixels, **save_args):
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, 'JPEG', quality=95, **save_args)
  return buffer.getvalue()


@pytest.mark.parametrize('name,pattern', [
    ('missing.png', r'^No such file or directory$'),
    ('notes.png', r'^not an image: neither JPEG, PNG, GIF, BMP nor WebP$'),
    ('empty.jpg', r'^the file is empty \(0 bytes\)$'),
    ('truncated.jpg', r'^cannot decode it: the JPEG data is truncated or corrupt$'),
])
def test_unreadable_images_are_one_line_errors(tmp_path, name, pattern):
  path = tmp_path / name
  if name == 'notes.png':
    path.write_text('not an image\n')
  elif name == 'empty.jpg':
    path.write_bytes(b'')
  elif name == 'truncated.jpg':
    data = _jpeg_bytes(np.random.default_rng(0).integers(0, 256, (64, 48, 3), np.uint8))
    path.write_bytes(data[:len(data) // 2])
  with pytest.raises(predict.ImageError, match=pattern):
    predict.load_image(str(path), 224, 0.875)


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied_as_pil_exif_transpose(tmp_path, orientation):
  # Smooth and asymmetric: each of the 8 orientations gives another image.
  y, x = np.mgrid[:48, :64]
  pixels = np.stack([4 * x, 5 * y, 2 * x + y], -1).clip(0, 255).astype(np.uint8)
  exif = Image.Exif()
  exif[0x0112] = orientation
  path = tmp_path / 'photo.jpg'
  path.write_bytes(_jpeg_bytes(pixels, exif=exif))
  got = predict.load_image(str(path), 32, 1.0)
  # PIL's transpose of TensorFlow's decode (PIL's own decode rounds otherwise).
  decoded = Image.fromarray(tf.io.decode_jpeg(path.read_bytes(), channels=3).numpy())
  decoded.getexif()[0x0112] = orientation
  upright = np.asarray(ImageOps.exif_transpose(decoded))
  assert upright.shape[:2] == ((64, 48) if orientation >= 5 else (48, 64))
  want = imagenet.eval_transform(tf.constant(upright), 32, 1.0).numpy()
  np.testing.assert_array_equal(got, want)


@pytest.mark.slow
@pytest.mark.parametrize('case,pattern', [
    ('png_1x10000', 'resizing 1x10000 to a short side of 256 takes about 655,360,000 pixels, '
                    'more than the limit of 22,369,621'),
    ('png_1x100000', 'resizing 1x100000 to a short side of 256 takes about 6,553,600,000'),
    ('png_20000x20000', 'more than 178,956,970 pixels, past the limit of 89,478,485'),
    ('fifo', 'a FIFO (named pipe), not a regular file'),
])
def test_hostile_images_fail_from_the_header(tmp_path, case, pattern):
  path = (hostile_files.IMAGES[case] if case in hostile_files.IMAGES else
          hostile_files.fifo)(str(tmp_path))
  result = limited.run(
      [sys.executable, '-m', 'mvitv2_jax.predict', '--model', 'mvitv2_t', '--checkpoint',
       str(DATA / 'tiny.pyth'), path], address_space_mb=4000, timeout=120,
      env=training.subprocess_env())
  assert result.returncode == 1 and not result.timed_out, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr and not result.stdout
  assert result.error_lines == [f'error: {path}: {result.error_lines[0].split(": ", 2)[2]}']
  assert pattern in result.error_lines[0], result.error_lines
  # TensorFlow's import alone takes about 700 MB.
  assert result.peak_rss_mb < 1000, result.peak_rss_mb


def test_predict_runs_a_batch_norm_family_on_its_running_statistics(tmp_path, capsys):
  # A ResT/LIT file converts to params and batch_stats; predict applies both.
  model = models.create_model('litv2_demo')
  variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
  stats = jax.tree.map(lambda x: x + 0.5, variables['batch_stats'])  # Not the init values.
  variables = {'params': variables['params'], 'batch_stats': stats}
  checkpoint = tmp_path / 'litv2_demo.safetensors'
  golden.write_safetensors(checkpoint, convert.params_to_state_dict(variables, 'litv2_demo'))
  jpeg = tmp_path / 'photo.jpg'
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
                  ).save(jpeg)
  capsys.readouterr()
  assert predict.main(['--model', 'litv2_demo', '--checkpoint', str(checkpoint),
                       '--num_classes', '10', '--image_size', '64', '--crop_pct', '1.0',
                       '--top_k', '10', str(jpeg)]) == 0
  printed = {int(line.split('class ')[1]): float(line.split('%')[0]) / 100
             for line in capsys.readouterr().out.splitlines()[1:]}
  image = predict.load_image(str(jpeg), 64, 1.0)
  want = np.asarray(jax.nn.softmax(model.apply(variables, image[None])))[0]
  np.testing.assert_allclose([printed[i] for i in range(10)], want, atol=1e-4)
