"""The record of a dataset build: items skipped, entries ignored, and the bad-fraction limit.

Every skipped item (a video or an image that cannot be trained on) and every ignored
entry (a stray file, a dot-file) is logged as a warning with its path and reason, and
written to a report file beside the dataset as it is found, so that a build stopped
midway still names what it saw. The build stops once a split's skipped items exceed
`max_bad_fraction` of its items, naming the folders with the most.
"""

import collections
import logging
import os

log = logging.getLogger(__name__)

# Kinetics copies lose a few percent of their videos to dead links and failed decodes.
DEFAULT_MAX_BAD_FRACTION = 0.05
REPORT_NAME = 'build_report.txt'


class TooManyBadItemsError(ValueError):
  """More items of a split were skipped than `max_bad_fraction` allows."""


class BuildReport:
  """Counts and records what a build skipped and ignored, per split."""

  def __init__(self, path: str, max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION):
    """Starts a report at `path` (replacing an earlier build's).

    Args:
      path: the report file.
      max_bad_fraction: the largest share of skipped items a split may have.
    """
    if not 0 <= max_bad_fraction <= 1:
      raise ValueError(f'max_bad_fraction must be in [0, 1], not {max_bad_fraction}')
    self.path = path
    self.max_bad_fraction = max_bad_fraction
    self.kept = collections.Counter()
    self.skipped = collections.Counter()
    self.ignored = 0
    self._bad_by_folder = collections.defaultdict(collections.Counter)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
      f.write('# Build report: items skipped and entries ignored, with the reason.\n')

  def _write(self, line: str):
    with open(self.path, 'a', encoding='utf-8') as f:
      f.write(line + '\n')

  def keep(self, split: str):
    """Counts one item of `split` that went into the dataset."""
    self.kept[split] += 1

  def skip(self, split: str, path: str, reason: str, folder: str | None = None):
    """Records an item of `split` left out of the dataset.

    Args:
      split: the split.
      path: the item (a video folder, an image file).
      reason: why, in plain words.
      folder: the folder it is counted under for the worst-folders list (default:
        the parent of `path`).
    """
    self.skipped[split] += 1
    self._bad_by_folder[split][folder or os.path.dirname(path)] += 1
    log.warning('Skipped %s: %s', path, reason)
    self._write(f'skipped\t{split}\t{path}\t{reason}')

  def ignore(self, path: str, reason: str):
    """Records an entry that is not an item (a stray file, a dot-file)."""
    self.ignored += 1
    log.warning('Ignored %s: %s', path, reason)
    self._write(f'ignored\t-\t{path}\t{reason}')

  def note(self, line: str):
    """Adds a line to the report only (e.g. a list too long for a message)."""
    self._write(f'# {line}')

  def summary(self) -> str:
    """The counts of the whole build, one line."""
    kept, skipped = sum(self.kept.values()), sum(self.skipped.values())
    return (f'{kept} items kept, {skipped} skipped, {self.ignored} stray entries ignored; '
            f'each one named in {self.path}')

  def worst_folders(self, split: str, count: int = 5) -> str:
    """'folder (n), ...': the folders of `split` with the most skipped items."""
    worst = self._bad_by_folder[split].most_common(count)
    return ', '.join(f'{folder} ({n})' for folder, n in worst)

  def finish_split(self, split: str):
    """Writes the split's counts; raises if its skipped share is over the limit.

    Raises:
      TooManyBadItemsError: more than `max_bad_fraction` of the split was skipped.
    """
    kept, skipped = self.kept[split], self.skipped[split]
    total = kept + skipped
    summary = f'{split}: {kept} items kept, {skipped} skipped of {total}'
    self.note(summary)
    if skipped:
      log.warning('%s; %d entries ignored so far; all named in %s', summary, self.ignored,
                  self.path)
    else:
      log.info('%s', summary)
    if total and skipped / total > self.max_bad_fraction:
      raise TooManyBadItemsError(
          f'{skipped} of the {total} items of {split} ({skipped / total:.1%}) could not be '
          f'used, more than max_bad_fraction={self.max_bad_fraction:g}; most in '
          f'{self.worst_folders(split)}; every one is named in {self.path}')
