"""Prepares a TFDS dataset for training: the package's command, no apache_beam needed.

  python -m mvitv2_jax.data.prepare imagenet2012 --data_dir=DIR
  python -m mvitv2_jax.data.prepare mvitv2_video_frames/kinetics400 --data_dir=DIR
  python -m mvitv2_jax.data.prepare ucf101 --data_dir=DIR

Calls the builder's `download_and_prepare` (the `tfds build` CLI of tensorflow-datasets
4.9 imports apache_beam at start-up, which is not a dependency). `imagenet2012` and
`mvitv2_video_frames/*` read `--manual_dir` (default `<data_dir>/downloads/manual`) and
decode every image and frame once: items that cannot be trained on are left out, named
in warnings and in `build_report.txt` beside the dataset, and more than
`--max_bad_fraction` of a split stops the build. Other datasets build as TFDS builds
them. A build stopped midway (Ctrl-C, kill, full disk) leaves nothing the next run
trips on: its unfinished folder is removed then, and the build starts again.

Exit status: 0 prepared (or already was); 1 failed, with one `error:` line; 2 bad
command line; 130 / 143 stopped by SIGINT / SIGTERM.
"""

import argparse
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import sys

import tensorflow_datasets as tfds

from mvitv2_jax.data import build_report
from mvitv2_jax.data import demo_dataset  # pylint: disable=unused-import (registers it)
from mvitv2_jax.data import frames_check
from mvitv2_jax.data import imagenet_build
from mvitv2_jax.data import video_demo  # pylint: disable=unused-import (registers it)
from mvitv2_jax.data import video_folder

log = logging.getLogger('mvitv2_jax')

_CHECKED_DATASETS = ('imagenet2012', video_folder.MViTv2VideoFrames.name)
# TFDS builds into `incomplete.<random>_<version>` beside the version folder.
_INCOMPLETE_PREFIX = 'incomplete.'


class PrepareError(RuntimeError):
  """The dataset could not be prepared; the message says why and what to do."""


def command(name: str, data_root: str) -> str:
  """The command line that prepares dataset `name` in `data_root`."""
  return f'python -m mvitv2_jax.data.prepare {name} --data_dir={data_root}'


def make_builder(name: str, data_dir: str | None,
                 max_bad_fraction: float) -> tfds.core.DatasetBuilder:
  """The builder that prepares `name`: the checking one where the package has one."""
  base = name.split('/')[0].split(':')[0]
  if base == 'imagenet2012':
    return imagenet_build.CheckedImagenet2012(data_dir=data_dir,
                                              max_bad_fraction=max_bad_fraction)
  if base == video_folder.MViTv2VideoFrames.name:
    return tfds.builder(name, data_dir=data_dir, max_bad_fraction=max_bad_fraction)
  return tfds.builder(name, data_dir=data_dir)


def _remove_unfinished(builder: tfds.core.DatasetBuilder):
  """Removes what an earlier build of `builder` left when it was stopped midway."""
  parent = os.path.dirname(os.fspath(builder.data_path))
  if not os.path.isdir(parent):
    return
  for name in sorted(os.listdir(parent)):
    if name.startswith(_INCOMPLETE_PREFIX) and name.endswith(f'_{builder.version}'):
      path = os.path.join(parent, name)
      log.warning('Removing %s, left by a build that was stopped midway.', path)
      shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _locked(builder: tfds.core.DatasetBuilder):
  """One build of a dataset at a time: a second one stops at once."""
  parent = os.path.dirname(os.fspath(builder.data_path))
  os.makedirs(parent, exist_ok=True)
  with open(os.path.join(parent, '.prepare.lock'), 'a+') as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise PrepareError(f'another process is building {builder.name} in {parent}; wait '
                         'for it to finish') from None
    yield  # The kernel releases the lock when the process ends, however it ends.


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None,
            max_bad_fraction: float = build_report.DEFAULT_MAX_BAD_FRACTION
            ) -> tfds.core.DatasetBuilder:
  """Builds dataset `name` in `data_dir` unless it is already prepared.

  Args:
    name: a TFDS name, with its config where it has several
      (`mvitv2_video_frames/kinetics400`).
    data_dir: the TFDS data dir (default: TFDS's, ~/tensorflow_datasets).
    manual_dir: where manually downloaded data lie (default
      `<data_dir>/downloads/manual`).
    max_bad_fraction: checked datasets: the share of bad items a split may have.

  Returns:
    The prepared builder.

  Raises:
    PrepareError: the data is missing, in another layout, too often bad, or the disk
      is full; the message says which.
  """
  builder = make_builder(name, data_dir, max_bad_fraction)
  if builder.is_prepared():
    log.info('%s is already prepared in %s.', name, builder.data_dir)
    return builder
  root = os.fspath(builder.data_dir_root)
  manual_dir = manual_dir or os.path.join(root, 'downloads', 'manual')
  with _locked(builder):
    _remove_unfinished(builder)
    log.info('Preparing %s in %s (manual data: %s).', name, root, manual_dir)
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except (video_folder.LayoutError, build_report.TooManyBadItemsError) as e:
      raise PrepareError(str(e)) from None
    except AssertionError as e:  # TFDS's way of saying the manual data is missing.
      raise PrepareError(f'{name}: the data to build from is missing: '
                         f'{" ".join(str(e).split())}') from None
    except OSError as e:
      raise PrepareError(f'building {name} in {root} failed: {e}; nothing was kept, '
                         'rerun the same command once fixed') from None
  log.info('%s is prepared in %s.', name, builder.data_dir)
  report = getattr(builder, 'build_report', None)
  if report is not None:
    log.info('%s: %s', name, report.summary())
  return builder


def _fraction(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
  if not 0 <= value <= 1:
    raise argparse.ArgumentTypeError(f'{value} is not in [0, 1]')
  return value


def _raise_on_sigterm(signum, frame):
  del frame
  raise KeyboardInterrupt(signum)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m mvitv2_jax.data.prepare',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('dataset', help='imagenet2012, mvitv2_video_frames/<kinetics400|'
                      'kinetics600|kinetics700|ssv2>, ucf101 or any TFDS name')
  parser.add_argument('--data_dir', '--data-dir', default=None,
                      help='TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)')
  parser.add_argument('--manual_dir', '--manual-dir', default=None,
                      help='manually downloaded data (default: <data_dir>/downloads/manual)')
  parser.add_argument('--max_bad_fraction', '--max-bad-fraction', type=_fraction,
                      default=build_report.DEFAULT_MAX_BAD_FRACTION,
                      help='the share of a split that may be left out as undecodable or '
                           'malformed before the build stops (default %(default)s)')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stderr)
  logging.getLogger('absl').setLevel(logging.WARNING)
  if args.dataset.split('/')[0] not in _CHECKED_DATASETS:
    log.info('%s is built as TFDS builds it: its images are not checked.', args.dataset)
  previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
  try:
    prepare(args.dataset, args.data_dir, args.manual_dir, args.max_bad_fraction)
  except (PrepareError, frames_check.BadItem, tfds.core.registered.DatasetNotFoundError,
          ValueError) as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr, flush=True)
    return 1
  except KeyboardInterrupt as e:
    signum = e.args[0] if e.args else signal.SIGINT
    print(f'error: stopped by {signal.Signals(signum).name}; the unfinished build is '
          'removed, rerun the same command to build again', file=sys.stderr, flush=True)
    return 128 + signum
  finally:
    signal.signal(signal.SIGTERM, previous)
  return 0


if __name__ == '__main__':
  sys.exit(main())
