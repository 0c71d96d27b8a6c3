"""The convert command: a PyTorch MViTv2 checkpoint -> a Flax params checkpoint (orbax).

  mvitv2-convert MViTv2_S_in1k.pyth ckpt/mvitv2_s --model mvitv2_s
  mvitv2-convert pretrained:mvitv2_s_16x4.ssv2 ckpt/s16x4_ssv2   # downloaded once; its model
  python -m mvitv2_jax.convert MViTv2_S_in1k.pyth ckpt/mvitv2_s --model mvitv2_s

Bad input exits 1 with one `error:` line on stderr and writes nothing.
"""

import argparse
import os
import sys
import time

import jax

from mvitv2_jax import models
from mvitv2_jax import checkpoint
from mvitv2_jax import pretrained
from mvitv2_jax.convert import loader


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
  if value <= 0:
    raise argparse.ArgumentTypeError(f'{value} is not positive')
  return value


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='mvitv2-convert',
      description='Convert a PyTorch checkpoint (official MViT and PySlowFast .pyth, timm '
                  '.pth/.safetensors) to a Flax params checkpoint (orbax).',
      epilog=f'The reader allocates at most twice the tensor bytes a file declares plus 16 MiB, '
             f'and never more than ${checkpoint.MAX_BYTES_ENV} bytes (default 32 GiB).')
  parser.add_argument('src', help='PyTorch checkpoint file, or pretrained:NAME (a released '
                                  f'checkpoint, downloaded once: {", ".join(pretrained.names())})')
  parser.add_argument('dst', help='output directory (must not exist)')
  parser.add_argument('--model', choices=models.model_names(), metavar='MODEL',
                      help=f'one of: {", ".join(models.model_names())} (default with '
                           'pretrained:NAME: its model)')
  parser.add_argument('--num-classes', type=_positive_int, default=None)
  parser.add_argument('--image-size', type=_positive_int, default=None,
                      help='build size of the target model; rel-pos tables are resized to it')
  parser.add_argument('--drop-head', action='store_true',
                      help='initialise a fresh head (for a different number of classes)')
  parser.add_argument('--inflate', action='store_true',
                      help='an image checkpoint initialising a video model (2-D kernels as the '
                           'centre frame, temporal rel-pos zero)')
  parser.add_argument('--cls-residual-q', action='store_true',
                      help='cls variants: residual pooling also adds q to the cls token (timm)')
  args = parser.parse_args(argv)
  overrides = {'cls_residual_q': True} if args.cls_residual_q else {}
  if args.src.startswith(pretrained.PREFIX):
    try:
      row = pretrained.get(args.src)
    except ValueError as e:
      parser.error(f'argument src: {e}')
    args.model = args.model or row.model
    if args.num_classes is None and not args.drop_head:
      args.num_classes = row.num_classes
    overrides = {**row.overrides, **overrides}
  elif args.model is None:
    parser.error('the following arguments are required: --model')
  if args.image_size is not None:
    multiple = models.image_size_multiple(models.variant_config(args.model))
    if args.image_size % multiple:
      parser.error(f'argument --image-size: {args.model} needs a multiple of {multiple}, '
                   f'not {args.image_size}')
  dst = os.path.abspath(args.dst)
  if os.path.lexists(dst):
    print(f'error: {dst} already exists; choose a new output directory', file=sys.stderr)
    return 2
  start = time.time()
  print(f'Reading {args.src} and mapping it onto {args.model} ...', flush=True)
  try:
    params = loader.load_params(pretrained.resolve(args.src), args.model, num_classes=args.num_classes,
                                image_size=args.image_size, drop_head=args.drop_head,
                                inflate=args.inflate, **overrides)
  # ConversionError, CheckpointFormatError, DownloadError: one line naming the file.
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'Writing {dst} ...', flush=True)
  from mvitv2_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  checkpointing.save_params(dst, params)
  leaves = jax.tree_util.tree_leaves(params)
  print(f'Converted {args.src} -> {dst}: {args.model}, {len(leaves)} tensors, '
        f'{sum(x.size for x in leaves):,} params, {time.time() - start:.1f} s')
  return 0
