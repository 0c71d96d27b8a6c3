"""Top-k predictions for image files with an MViTv2 checkpoint, by class name.

  mvitv2-predict --pretrained mvitv2_s cat.jpg dog.jpg
  mvitv2-predict --model mvitv2_s --checkpoint ckpt/mvitv2_s cat.jpg dog.jpg
  python -m mvitv2_jax.predict --model mvitv2_s --checkpoint ckpt/mvitv2_s cat.jpg

--pretrained downloads a released checkpoint once (`mvitv2_jax.pretrained`) and takes
its model, classes, input size and crop from the table; the names are its label set's.

Preprocessing is the evaluation pipeline's (`mvitv2_jax.data.imagenet.eval_transform`),
the original's transform: resize the shorter side to int(image_size / crop_pct) with
bicubic resampling, center-crop, normalise with the ImageNet mean/std. 16-bit PNGs are
scaled to 8 bits; an EXIF orientation is applied first, as PIL's
`ImageOps.exif_transpose` does (photos from phones are stored sideways). Every image is
checked and prepared before the checkpoint loads; one with more than --max_pixels
pixels, or more than a quarter of them once resized, is refused from its header.
A bad image or checkpoint exits 1 with one `error:` line naming it.
"""

import argparse
import io
import os
import struct
import sys
import warnings

import jax
import numpy as np
from PIL import Image

from mvitv2_jax import checkpoint
from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax import pretrained
from mvitv2_jax.data import frames_check
from mvitv2_jax.data import imagenet

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS.
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# The most an image file can need per pixel (uncompressed 16-bit RGBA), plus metadata.
_FILE_BYTES_PER_PIXEL = 8
_FILE_SLACK_BYTES = 16 << 20
# The resize works in float32 on every output pixel: it may have a quarter of the pixels.
_RESIZE_COST = 4
# What a broken file can make Pillow raise while it reads the header and counts frames.
_HEADER_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error, IndexError,
                  TypeError)
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the NumPy equivalent of ImageOps.exif_transpose's transpose.
_ORIENT = {
    2: lambda a: a[:, ::-1],                     # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],                  # ROTATE_180
    4: lambda a: a[::-1],                        # FLIP_TOP_BOTTOM
    5: lambda a: a.transpose(1, 0, 2),           # TRANSPOSE
    6: lambda a: np.rot90(a, -1),                # ROTATE_270 (counter-clockwise)
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # TRANSVERSE
    8: lambda a: np.rot90(a, 1),                 # ROTATE_90
}


class ImageError(ValueError):
  """An image file that cannot be read within the limits; the message says why."""


def _first_line(error: object) -> str:
  return (str(error).splitlines() or [type(error).__name__])[0][:200]


def _read_header(encoded: bytes, max_pixels: int) -> tuple[int, int, int, int]:
  """(width, height, frames, EXIF orientation) from the header, without decoding pixels."""
  if not encoded:
    raise ImageError('the file is empty (0 bytes)')
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)
    try:
      with Image.open(io.BytesIO(encoded)) as image:
        # TensorFlow decodes every frame of a GIF before it keeps the first.
        frames = image.n_frames if image.format == 'GIF' else 1
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        return image.size[0], image.size[1], frames, orientation
    except Image.DecompressionBombError:
      raise ImageError(f'more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, past the limit of '
                       f'{max_pixels:,} (--max_pixels)') from None
    except Image.UnidentifiedImageError:
      raise ImageError('not an image: neither JPEG, PNG, GIF, BMP nor WebP') from None
    except _HEADER_ERRORS as e:
      raise ImageError(f'not a readable image: its header is damaged ({_first_line(e)})'
                       ) from None


def load_image(path: str, image_size: int, crop_pct: float,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """Reads an image file through the evaluation transform.

  Args:
    path: a JPEG, PNG (8 or 16 bits), GIF or BMP file.
    image_size: the side of the output.
    crop_pct: the crop's share of the resized short side, in (0, 1].
    max_pixels: the most pixels the decoded image (all GIF frames) may have; the
      resized image, before its crop, may have a quarter of them.

  Returns:
    float32 [image_size, image_size, 3], normalised.

  Raises:
    ImageError: the file is missing, not a regular file, not a decodable image, or
      over `max_pixels`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    with checkpoint.open_regular(path) as f:
      nbytes = os.fstat(f.fileno()).st_size
      if nbytes > _FILE_BYTES_PER_PIXEL * max_pixels + _FILE_SLACK_BYTES:
        raise ImageError(f'{nbytes:,} bytes, more than an image of at most {max_pixels:,} '
                         'pixels needs (--max_pixels)')
      encoded = f.read()
  except OSError as e:
    raise ImageError(e.strerror or _first_line(e)) from None
  width, height, frames, orientation = _read_header(encoded, max_pixels)
  pixels = width * height * frames
  if pixels > max_pixels:
    what = f'{width}x{height}' + (f' x {frames} frames' if frames > 1 else '')
    raise ImageError(f'{what} is {pixels:,} pixels, more than the limit of {max_pixels:,} '
                     '(--max_pixels)')
  short, long = sorted((width, height))
  resize = int(image_size / crop_pct)
  resized = resize * resize * long / max(short, 1)
  if resized > max_pixels // _RESIZE_COST:
    raise ImageError(f'resizing {width}x{height} to a short side of {resize} takes about '
                     f'{resized:,.0f} pixels, more than the limit of '
                     f'{max_pixels // _RESIZE_COST:,} (--max_pixels / {_RESIZE_COST})')
  try:
    if encoded.startswith(_PNG_SIGNATURE) and encoded[24:25] == b'\x10':  # IHDR bit depth.
      wide = tf.io.decode_png(encoded, channels=3, dtype=tf.uint16)
      image = tf.cast(tf.round(tf.cast(wide, tf.float32) / 257.0), tf.uint8)  # 65535 -> 255.
    else:
      image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
  except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
    raise ImageError(f'cannot decode it: {frames_check.describe_decode_error(e)}') from None
  if orientation in _ORIENT:
    image = tf.constant(np.ascontiguousarray(_ORIENT[orientation](image.numpy())))
  return imagenet.eval_transform(image, image_size, crop_pct).numpy()


def _number(kind, low, high=None, *, low_open=False):
  """An argparse type: `kind` in [low, high] (or (low, high] with low_open)."""

  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'{text!r} is not a {kind.__name__}') from None
    if value < low or (low_open and value == low) or (high is not None and value > high):
      lo = f'({low}' if low_open else f'[{low}'
      raise argparse.ArgumentTypeError(f'{value} is not in {lo}, {high or "inf"}]')
    return value

  return parse


def image_classifiers() -> list[str]:
  """The variants that classify single images: the ones this command can run."""
  return [name for name in models.model_names()
          if models.family_of(name).task == 'classification'
          and len(models.family_of(name).input_shape(models.variant_config(name))) == 3]


def _fill_defaults(args: argparse.Namespace, row: pretrained.Checkpoint | None):
  """Unset options from the checkpoint's table row, else the ImageNet-1K defaults."""
  if args.num_classes is None:
    args.num_classes = row.num_classes if row else 1000
  if args.image_size is None:
    args.image_size = row.resolution if row else 224
  if args.crop_pct is None:
    args.crop_pct = row.preprocessing.crop_pct if row else 0.875


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='mvitv2-predict', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('images', nargs='+', help='image files (JPEG, PNG, GIF, BMP)')
  names = image_classifiers()
  released = [n for n in pretrained.names() if pretrained.get(n).model in names]
  parser.add_argument('--model', choices=names, metavar='MODEL',
                      help=f'one of: {", ".join(names)} (default: the --pretrained one\'s)')
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--checkpoint',
                      help='converted checkpoint directory, or a PyTorch .pyth/.pth/.safetensors')
  source.add_argument('--pretrained', metavar='NAME',
                      help=f'a released checkpoint, downloaded once: {", ".join(released)}')
  parser.add_argument('--num_classes', '--num-classes', type=_number(int, 1),
                      help='default: the checkpoint\'s, else 1000')
  parser.add_argument('--image_size', '--image-size', type=_number(int, 1),
                      help='default: the checkpoint\'s, else 224')
  parser.add_argument('--crop_pct', '--crop-pct', type=_number(float, 0.0, 1.0, low_open=True),
                      help='default: the checkpoint\'s; official eval: 0.875 (resize 256, '
                           'crop 224); timm uses 0.9')
  parser.add_argument('--cls_residual_q', '--cls-residual-q', action='store_true',
                      help='cls variants: residual pooling also adds q to the cls token (timm)')
  parser.add_argument('--top_k', '--top-k', type=_number(int, 1), default=5)
  parser.add_argument('--max_pixels', '--max-pixels',
                      type=_number(int, 1, 2 * DEFAULT_MAX_PIXELS), default=DEFAULT_MAX_PIXELS,
                      help='refuse images with more pixels as decoded (all GIF frames), or '
                           'with more than a quarter of them as resized; at most Pillow\'s '
                           'own limit of twice the default')
  args = parser.parse_args(argv)
  row = None
  if args.pretrained:
    if args.pretrained not in released:
      parser.error(f'argument --pretrained: {args.pretrained!r} is not a released image '
                   f'classifier; one of: {", ".join(released)}')
    row = pretrained.get(args.pretrained)
    if args.model not in (None, row.model):
      parser.error(f'argument --model: {args.pretrained} is a {row.model}, not {args.model}')
    args.model = row.model
  elif args.model is None:
    parser.error('the following arguments are required with --checkpoint: --model')
  _fill_defaults(args, row)

  overrides = dict(num_classes=args.num_classes, image_size=args.image_size)
  if args.cls_residual_q:
    overrides['cls_residual_q'] = True
  model = models.create_model(args.model, **overrides)
  multiple = models.image_size_multiple(model)
  if args.image_size % multiple:
    parser.error(f'argument --image_size/--image-size: {args.model} needs a multiple of '
                 f'{multiple}, not {args.image_size}')
  if args.top_k > args.num_classes:
    parser.error(f'argument --top_k/--top-k: {args.top_k} is more than the {args.num_classes} '
                 'classes')
  images = []
  for path in args.images:
    try:
      images.append(load_image(path, args.image_size, args.crop_pct, args.max_pixels))
    except ImageError as e:
      print(f'error: {path}: {e}', file=sys.stderr)
      return 1
  try:
    if row is not None:
      params = pretrained.load_pretrained(row.name, **overrides)
    else:
      params = convert.load_params(args.checkpoint, args.model, **overrides)
  # ConversionError, CheckpointFormatError, DownloadError: one line naming the file.
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  label_set = row.label_set if row is not None else 'imagenet-1k'
  names = pretrained.labels.names(label_set, args.num_classes)
  forward = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x)))
  for path, image in zip(args.images, images):
    probs = np.asarray(forward(convert.as_variables(params), image[None]))[0]
    print(path)
    for label in np.argsort(-probs)[:args.top_k]:
      print(f'  {probs[label]:7.2%}  {names[label]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
