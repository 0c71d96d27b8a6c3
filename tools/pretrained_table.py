"""Writes README.md's "Pretrained models" table from the checkpoint table, so they agree.

  python -m tools.pretrained_table           # rewrites README.md between the markers
  python -m tools.pretrained_table --check   # exits 1 if README.md is out of date

The rows are `mvitv2_jax.pretrained.table.CHECKPOINTS`; tests/tools/test_pretrained_table.py
fails while the README differs from what this writes.
"""

import argparse
import pathlib
import sys

from mvitv2_jax.pretrained import table

README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'
BEGIN = '<!-- pretrained-table:begin (written by tools/pretrained_table.py; do not edit) -->'
END = '<!-- pretrained-table:end -->'


def _accuracy(row: table.Checkpoint) -> str:
  if row.top1 is None:
    return f'- ({row.note})' if row.note else '-'
  top5 = f' / {row.top5}' if row.top5 is not None else ''
  return f'{row.top1}{top5} ({row.metric.replace("top-1, ", "")})'


def _stats(spec: table.Preprocessing) -> str:
  if spec.mean == table.IMAGENET_MEAN and spec.std == table.IMAGENET_STD:
    return 'ImageNet mean/std'
  if spec.mean == table.KINETICS_MEAN and spec.std == table.KINETICS_STD:
    return 'mean 0.45, std 0.225'
  return f'mean {spec.mean}, std {spec.std}'


def _input(row: table.Checkpoint) -> str:
  spec = row.preprocessing
  size = f'{row.frames} x {row.resolution}' if row.frames else f'{row.resolution}'
  rate = f', sampling rate {spec.sampling_rate}' if spec.sampling_rate else (
      f', {row.frames} segments' if row.frames else '')
  bgr = ', BGR' if spec.channels == 'BGR' else ''
  return (f'{size}{rate}; short side {spec.resize} ({spec.interpolation}), crop '
          f'{spec.crop}{bgr}; {_stats(spec)}')


def _source(row: table.Checkpoint) -> str:
  if row.url:
    return f'[{row.filename}]({row.url})'
  return f'[Google Drive]({row.manual}) (by hand)'


def markdown() -> str:
  """The table, one line per checkpoint."""
  lines = ['| name | top-1 / top-5 (published) | input | classes | source |',
           '| --- | --- | --- | --- | --- |']
  for row in table.CHECKPOINTS:
    lines.append(f'| `{row.name}` | {_accuracy(row)} | {_input(row)} | {row.num_classes:,} '
                 f'{row.label_set} | {_source(row)} |')
  return '\n'.join(lines)


def render(readme: str) -> str:
  """`readme` with the text between the markers replaced by the table."""
  start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
  return readme[:start] + '\n' + markdown() + '\n' + readme[end:]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--check', action='store_true', help='only say whether it is up to date')
  args = parser.parse_args(argv)
  text = README.read_text()
  want = render(text)
  if args.check:
    if want != text:
      print(f'{README} is out of date: run python -m tools.pretrained_table', file=sys.stderr)
      return 1
    return 0
  README.write_text(want)
  return 0


if __name__ == '__main__':
  sys.exit(main())
