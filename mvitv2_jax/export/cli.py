"""The export command: a model and its weights as StableHLO (jax.export) or a SavedModel.

  mvitv2-export --model mvitv2_s --pretrained --format savedmodel out/mvitv2_s
  mvitv2-export --model mvitv2_s_16x4 --checkpoint ckpt/s16x4 --format stablehlo out/s16x4
  python -m mvitv2_jax.export --model mvitv2_t --pretrained --format stablehlo out/t

OUT (a new directory) holds `model.stablehlo` (`jax.export.serialize`: float32 preprocessed
inputs, any batch size) or the SavedModel (uint8 `serving_default`, see `savedmodel`), and
beside either `labels.txt` (one class name per line) and `model.json` (the model, its
input, its preprocessing, the platforms). Bad input exits 1 (2 for the command line) with
one `error:` line and writes nothing.
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

from mvitv2_jax import convert
from mvitv2_jax import models
from mvitv2_jax import pretrained
from mvitv2_jax.export import stablehlo
from mvitv2_jax.pretrained import table

FORMATS = ('stablehlo', 'savedmodel')


def default_preprocessing(model_name: str, cfg) -> table.Preprocessing:
  """The preprocessing of `model_name`'s released weights at the built size, else the
  ImageNet evaluation transform (images) or PySlowFast's Kinetics one (clips)."""
  size = cfg.image_size
  names = pretrained.names()
  if model_name in names:
    spec = pretrained.get(model_name).preprocessing
  elif cfg.num_frames:
    spec = table.Preprocessing(table.KINETICS_MEAN, table.KINETICS_STD, 256, 224, 'bilinear')
  else:
    spec = table.Preprocessing(table.IMAGENET_MEAN, table.IMAGENET_STD, 256, 224, 'bicubic')
  if spec.crop == size:
    return spec
  return dataclasses.replace(spec, crop=size, resize=round(size * spec.resize / spec.crop))


def _platforms(text: str) -> tuple[str, ...]:
  platforms = tuple(p.strip() for p in text.split(',') if p.strip())
  unknown = sorted(set(platforms) - set(stablehlo.PLATFORMS))
  if unknown or not platforms:
    raise argparse.ArgumentTypeError(
        f'{text!r}: platforms are a comma-separated list of {", ".join(stablehlo.PLATFORMS)}')
  return platforms


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='mvitv2-export', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('out', help='output directory (must not exist)')
  parser.add_argument('--model', required=True, metavar='NAME',
                      help='a variant (with --checkpoint) or a released checkpoint (with '
                           f'--pretrained: {", ".join(pretrained.names())})')
  weights = parser.add_mutually_exclusive_group(required=True)
  weights.add_argument('--pretrained', action='store_true',
                       help='the released weights of --model, downloaded once')
  weights.add_argument('--checkpoint', metavar='PATH',
                       help='a converted directory or a PyTorch .pyth/.pth/.safetensors')
  parser.add_argument('--format', required=True, choices=FORMATS)
  parser.add_argument('--platforms', type=_platforms, default=stablehlo.PLATFORMS,
                      help='comma-separated, of cpu, cuda, tpu (default: all three)')
  parser.add_argument('--num-classes', type=int, default=None,
                      help='with --checkpoint: the head\'s width (default: the variant\'s)')
  parser.add_argument('--image-size', type=int, default=None,
                      help='the build size (default: the variant\'s or the checkpoint\'s)')
  parser.add_argument('--cls-residual-q', action='store_true',
                      help='cls variants: residual pooling also adds q to the cls token (timm)')
  return parser


def _load(args, parser):
  """(row or None, model name, config overrides, params) for the command line."""
  overrides = {'cls_residual_q': True} if args.cls_residual_q else {}
  if args.image_size is not None:
    overrides['image_size'] = args.image_size
  if args.pretrained:
    if args.model not in pretrained.names():
      parser.error(f'argument --model: no released checkpoint {args.model!r}; one of: '
                   f'{", ".join(pretrained.names())}')
    row = pretrained.get(args.model)
    params = pretrained.load_pretrained(row.name, num_classes=args.num_classes, **overrides)
    fields = pretrained.model_config_overrides(row.name, **overrides)
    if args.num_classes is not None:
      fields['num_classes'] = args.num_classes
    return row, row.model, fields, params
  if args.model not in models.model_names():
    parser.error(f'argument --model: unknown model {args.model!r}; one of: '
                 f'{", ".join(models.model_names())}')
  if args.num_classes is not None:
    overrides['num_classes'] = args.num_classes
  params = convert.load_params(pretrained.resolve(args.checkpoint), args.model, **overrides)
  return None, args.model, overrides, params


def _metadata(args, row, model, spec) -> dict:
  cfg = model.cfg
  example = list(models.input_shape(model))
  return {
      'model': args.model, 'variant': row.model if row else args.model,
      'checkpoint': f'{pretrained.PREFIX}{row.name}' if row else args.checkpoint,
      'format': args.format, 'platforms': list(args.platforms),
      'num_classes': cfg.num_classes, 'label_set': row.label_set if row else '',
      'inputs': {'preprocessed': ['batch', *example], 'dtype': 'float32'},
      'serving_inputs': {'uint8': ['batch', *example[:-3], 'height', 'width', 3]},
      'preprocessing': dataclasses.asdict(spec),
      'attention_impl': cfg.attention_impl, 'pool_impl': cfg.pool_impl,
  }


def main(argv=None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  out = os.path.abspath(args.out)
  if os.path.lexists(out):
    print(f'error: {out} already exists; choose a new output directory', file=sys.stderr)
    return 2
  start = time.time()
  try:
    row, name, fields, params = _load(args, parser)
  # ConversionError, CheckpointFormatError, DownloadError: one line naming the file.
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  model = models.create_model(name, **fields, **stablehlo.kernel_overrides(args.platforms))
  spec = row.preprocessing if row and row.resolution == model.cfg.image_size else (
      default_preprocessing(row.name if row else name, model.cfg))
  labels = (pretrained.labels.names(row.label_set, model.cfg.num_classes) if row else
            pretrained.labels.names('imagenet-1k' if not model.cfg.num_frames else '',
                                    model.cfg.num_classes))
  tmp = f'{out}.tmp{os.getpid()}'
  try:
    print(f'Exporting {args.model} as {args.format} for {", ".join(args.platforms)} ...',
          flush=True)
    if args.format == 'stablehlo':
      exported = stablehlo.export(model, params, args.platforms)
      os.makedirs(tmp)
      with open(os.path.join(tmp, 'model.stablehlo'), 'wb') as f:
        f.write(exported.serialize())
    else:
      from mvitv2_jax.export import savedmodel  # pylint: disable=g-import-not-at-top (TF)
      savedmodel.write(tmp, model, params, spec, args.platforms)
    with open(os.path.join(tmp, 'labels.txt'), 'w') as f:
      f.write('\n'.join(labels) + '\n')
    with open(os.path.join(tmp, 'model.json'), 'w') as f:
      json.dump(_metadata(args, row, model, spec), f, indent=1)
    os.replace(tmp, out)  # Whole or not at all.
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  print(f'Exported {args.model} -> {out} ({args.format}, {time.time() - start:.1f} s)')
  return 0
