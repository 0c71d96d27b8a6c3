"""Top-k ImageNet predictions for image files with an MViTv2 checkpoint.

  mvitv2-predict --model mvitv2_s --checkpoint ckpt/mvitv2_s cat.jpg dog.jpg
  python -m mvitv2_jax.predict --model mvitv2_s --checkpoint ckpt/mvitv2_s cat.jpg

Preprocessing is the evaluation pipeline's (`mvitv2_jax.data.imagenet.eval_image`), the
original's transform: resize the shorter side to int(image_size / crop_pct) with
bicubic resampling, center-crop, normalise with the ImageNet mean/std.
"""

import argparse
import sys

import jax
import numpy as np

from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax.data import imagenet


def load_image(path: str, image_size: int, crop_pct: float) -> np.ndarray:
  """Reads an image file through the evaluation transform: [S, S, 3] float32."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    encoded = f.read()
  try:
    return imagenet.eval_image(tf.constant(encoded), image_size, crop_pct).numpy()
  except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
    raise OSError(e.message.splitlines()[0]) from None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='mvitv2-predict', description=__doc__,
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
  names = (imagenet.class_names() if args.num_classes == 1000 else
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
