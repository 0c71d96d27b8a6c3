"""Build-time checks of images and frame folders: decoded once, with plain-word reasons.

Frames and images are decoded with the op training uses (`tf.io.decode_image`), so what
passes here decodes there. A frame folder is a video when it holds frames (.jpg, .jpeg,
.png) whose names carry distinct numbers, ordered by them (1, 2, ..., 10, not 1, 10, 2),
all non-empty, decodable and of one size; dot-files (.DS_Store, macOS's ._* copies),
other files and subfolders are not frames and are named for the report.
"""

import os
import re
import unicodedata

import tensorflow as tf

FRAME_EXTENSIONS = ('.jpg', '.jpeg', '.png')
_NUMBER = re.compile(r'(\d+)')
# TensorFlow's messages carry the op's internal name and device: drop them.
_TF_NOISE = re.compile(r'\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$')
# TensorFlow's decode messages, in plain words.
_PLAIN_REASONS = (
    ('Input is empty', 'the file is empty'),
    ('jpeg::Uncompress failed', 'the JPEG data is truncated or corrupt'),
    ('Invalid JPEG data', 'the JPEG data is truncated or corrupt'),
    ('Invalid PNG data', 'the PNG data is truncated or corrupt'),
    ('Unknown image file format', 'not an image: neither JPEG, PNG, GIF, BMP nor WebP'),
)


class BadItem(ValueError):
  """An image or a frame folder that cannot be trained on; the message says why."""


def nfc(name: str) -> str:
  """`name` in Unicode NFC: macOS copies write names in NFD, Linux ones mostly in NFC."""
  return unicodedata.normalize('NFC', name)


def is_hidden(name: str) -> bool:
  """A dot-file or dot-folder: .DS_Store, ._000001.jpg (macOS), .ipynb_checkpoints."""
  return name.startswith('.')


def describe_decode_error(error: tf.errors.OpError) -> str:
  """A TensorFlow decode error in plain words."""
  message = _TF_NOISE.sub('', error.message).strip()
  for marker, plain in _PLAIN_REASONS:
    if marker in message:
      return plain
  return message or type(error).__name__


def image_shape(encoded: bytes) -> tuple[int, int]:
  """(height, width) of an encoded image, decoded in full as training decodes it.

  Raises:
    BadItem: empty, truncated, corrupt or not an image.
  """
  if not encoded:
    raise BadItem('the file is empty (0 bytes)')
  try:
    shape = tf.io.decode_image(encoded, channels=3, expand_animations=False).shape
  except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
    raise BadItem(describe_decode_error(e)) from None
  return int(shape[0]), int(shape[1])


def split_entries(folder: str) -> tuple[list[str], list[tuple[str, str]]]:
  """The subfolders of `folder`, and the entries that are not: (name, reason) each.

  Returns:
    (folder names, sorted; [(name, why it is not an item folder)]).
  """
  folders, strays = [], []
  for name in sorted(tf.io.gfile.listdir(folder)):
    name = name.rstrip('/')
    if is_hidden(name):
      strays.append((name, 'a hidden file or folder'))
    elif tf.io.gfile.isdir(os.path.join(folder, name)):
      folders.append(name)
    else:
      strays.append((name, 'a file where folders are expected'))
  return folders, strays


def read_video(video_dir: str) -> tuple[list[bytes], list[tuple[str, str]]]:
  """The encoded frames of a frame folder in time order, each decoded once to check it.

  Args:
    video_dir: a folder of frames.

  Returns:
    (encoded frames in time order, [(name, reason)] of the entries that are not frames).

  Raises:
    BadItem: no frames, names without distinct numbers, or a frame that is empty, does
      not decode, or differs in size from the first.
  """
  frames, strays = [], []
  for name in tf.io.gfile.listdir(video_dir):
    name = name.rstrip('/')
    if is_hidden(name):
      strays.append((name, 'a hidden file'))
    elif not name.lower().endswith(FRAME_EXTENSIONS):
      strays.append((name, 'not a frame (.jpg, .jpeg or .png)'))
    elif tf.io.gfile.isdir(os.path.join(video_dir, name)):
      strays.append((name, 'a folder, not a frame'))
    else:
      frames.append(name)
  if not frames:
    raise BadItem('holds no frames (.jpg, .jpeg or .png)')
  by_number = {}
  for name in frames:
    found = _NUMBER.findall(name)
    if not found:
      raise BadItem(f'frame {name} has no number in its name to order it by')
    number = int(found[-1])  # The last: img_001_0042.jpg is frame 42 of clip 1.
    if number in by_number:
      raise BadItem(f'frames {by_number[number]} and {name} have the same number: '
                    'their order is unknown')
    by_number[number] = name
  encoded, first = [], None
  for _, name in sorted(by_number.items()):  # As numbers: 2.jpg before 10.jpg.
    with tf.io.gfile.GFile(os.path.join(video_dir, name), 'rb') as f:
      data = f.read()
    try:
      shape = image_shape(data)
    except BadItem as e:
      raise BadItem(f'frame {name}: {e}') from None
    if first is None:
      first = (name, shape)
    elif shape != first[1]:
      raise BadItem(f'frame {name} is {shape[1]}x{shape[0]}, frame {first[0]} '
                    f'{first[1][1]}x{first[1][0]}: frames of a video must have one size')
    encoded.append(data)
  return encoded, strays
