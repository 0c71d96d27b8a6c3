"""Top-k ImageNet predictions for image files with an MViTv2 checkpoint.

  python -m mvitv2_jax.predict --model mvitv2_s --checkpoint ckpt/mvitv2_s cat.jpg dog.jpg

Preprocessing is the original's evaluation transform: resize the shorter side to
image_size / crop_pct with PIL bicubic, center-crop, scale to [0, 1], normalise
with the ImageNet mean/std.
"""

import argparse
import sys

import jax
import numpy as np
from PIL import Image

from mvitv2_jax import convert
from mvitv2_jax import models

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def imagenet_class_names() -> list[str]:
  """The 1000 ImageNet-1K class names in label order, from files TFDS ships.

  TFDS's imagenet2012 label list holds WordNet ids (label i = line i); the readable
  names in the same order come with its siscore dataset.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.datasets.siscore import labels as siscore_labels
  wnids = tfds.core.tfds_path('datasets/imagenet2012/labels.txt').read_text().split()
  names = siscore_labels.IMAGENET_LABELS_LIST
  return [f'{name} ({wnid})' for name, wnid in zip(names, wnids, strict=True)]


def load_image(path: str, image_size: int, crop_pct: float) -> np.ndarray:
  """Reads an image file as the original's eval transform does: [S, S, 3] float32."""
  with Image.open(path) as image:
    image = image.convert('RGB')
    width, height = image.size
    short = int(image_size / crop_pct)
    scale = short / min(width, height)
    size = (short, round(height * scale)) if width <= height else (round(width * scale), short)
    image = image.resize(size, Image.BICUBIC)
    left = int(round((image.width - image_size) / 2.0))
    top = int(round((image.height - image_size) / 2.0))
    image = image.crop((left, top, left + image_size, top + image_size))
  pixels = np.asarray(image, np.float32) / 255.0
  return (pixels - IMAGENET_MEAN) / IMAGENET_STD


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m mvitv2_jax.predict', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('images', nargs='+', help='image files (JPEG, PNG, ...)')
  parser.add_argument('--model', required=True, help=f'one of: {", ".join(models.model_names())}')
  parser.add_argument('--checkpoint', required=True,
                      help='converted checkpoint directory, or a PyTorch .pyth/.pth/.safetensors')
  parser.add_argument('--num_classes', '--num-classes', type=int, default=1000)
  parser.add_argument('--image_size', '--image-size', type=int, default=224)
  parser.add_argument('--crop_pct', '--crop-pct', type=float, default=0.875,
                      help='official eval: 0.875 (resize 256, crop 224); timm uses 0.9')
  parser.add_argument('--cls_residual_q', '--cls-residual-q', action='store_true',
                      help='cls variants: residual pooling also adds q to the cls token (timm)')
  parser.add_argument('--top_k', '--top-k', type=int, default=5)
  args = parser.parse_args(argv)

  overrides = dict(num_classes=args.num_classes, image_size=args.image_size)
  if args.cls_residual_q:
    overrides['cls_residual_q'] = True
  try:
    params = convert.load_params(args.checkpoint, args.model, **overrides)
  except (convert.ConversionError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  model = models.create_model(args.model, **overrides)
  names = (imagenet_class_names() if args.num_classes == 1000 else
           [f'class {i}' for i in range(args.num_classes)])
  forward = jax.jit(lambda p, x: jax.nn.softmax(model.apply({'params': p}, x)))
  for path in args.images:
    try:
      image = load_image(path, args.image_size, args.crop_pct)
    except OSError as e:
      print(f'error: cannot read {path}: {e}', file=sys.stderr)
      return 1
    probs = np.asarray(forward(params, image[None]))[0]
    print(path)
    for label in np.argsort(-probs)[:args.top_k]:
      print(f'  {probs[label]:7.2%}  {names[label]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
