"""ImageNet constants and the evaluation transform shared by the eval pipeline and predict.

The transform is the original's: resize the shorter side to int(size / crop_pct) with
bicubic resampling (antialiased, as PIL's), centre-crop size x size, normalise with
the ImageNet mean and std.
"""

import tensorflow as tf

# TensorFlow only preprocesses: hidden from GPUs, it does not reserve memory JAX needs.
tf.config.set_visible_devices([], 'GPU')

MEAN_RGB = (0.485, 0.456, 0.406)  # On [0, 1] RGB.
STDDEV_RGB = (0.229, 0.224, 0.225)


def class_names() -> list[str]:
  """The 1000 ImageNet-1K class names in label order, from files TFDS ships.

  TFDS's imagenet2012 label list holds WordNet ids (label i = line i); the readable
  names in the same order come with its siscore dataset.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.datasets.siscore import labels as siscore_labels  # pylint: disable=g-import-not-at-top
  wnids = tfds.core.tfds_path('datasets/imagenet2012/labels.txt').read_text().split()
  names = siscore_labels.IMAGENET_LABELS_LIST
  return [f'{name} ({wnid})' for name, wnid in zip(names, wnids, strict=True)]


def round_uint8(image: tf.Tensor) -> tf.Tensor:
  """A float image as uint8: rounded (half to even) and clipped to [0, 255]."""
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def resize_uint8(image: tf.Tensor, height, width) -> tf.Tensor:
  # Antialiased bicubic matches PIL's bicubic when downscaling.
  return round_uint8(tf.image.resize(image, [height, width], method='bicubic', antialias=True))


def normalize(image: tf.Tensor) -> tf.Tensor:
  """(image - mean) / std per channel of uint8-valued [H, W, 3], as float32."""
  # On [H, W * 3] rows with the constants tiled to W * 3 the broadcast is a plain row
  # broadcast, much cheaper on CPU than a [3] vector over [H, W, 3].
  shape = tf.shape(image)
  rows = tf.reshape(tf.cast(image, tf.float32), [shape[0], -1])
  mean = tf.tile(tf.constant([255 * m for m in MEAN_RGB], tf.float32), [shape[1]])
  std = tf.tile(tf.constant([255 * s for s in STDDEV_RGB], tf.float32), [shape[1]])
  return tf.reshape((rows - mean) / std, shape)


def eval_resize_shape(height: tf.Tensor, width: tf.Tensor, size: int,
                      crop_pct: float) -> tuple[tf.Tensor, tf.Tensor]:
  """torchvision Resize(int(size / crop_pct)): the short side to that, the long side
  to int(resize * long / short)."""
  resize = int(size / crop_pct)
  short = tf.minimum(height, width)
  scale = resize / tf.cast(short, tf.float64)
  new_h = tf.where(height == short, resize, tf.cast(tf.cast(height, tf.float64) * scale, tf.int32))
  new_w = tf.where(height == short, tf.cast(tf.cast(width, tf.float64) * scale, tf.int32), resize)
  return new_h, new_w


def eval_image(image_bytes: tf.Tensor, size: int, crop_pct: float) -> tf.Tensor:
  """Decodes an encoded image and applies the evaluation transform: float32 [size, size, 3]."""
  image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
  return eval_transform(image, size, crop_pct)


def eval_transform(image: tf.Tensor, size: int, crop_pct: float) -> tf.Tensor:
  """The evaluation transform of a decoded uint8 [H, W, 3] image: float32 [size, size, 3]."""
  shape = tf.shape(image)
  new_h, new_w = eval_resize_shape(shape[0], shape[1], size, crop_pct)
  image = resize_uint8(image, new_h, new_w)
  # torchvision CenterCrop offsets: int(round((dim - size) / 2)).
  top = tf.cast(tf.round((new_h - size) / 2), tf.int32)
  left = tf.cast(tf.round((new_w - size) / 2), tf.int32)
  image = image[top:top + size, left:left + size]
  return tf.ensure_shape(normalize(image), [size, size, 3])
