"""Records that fail to decode at train or eval time: flagged, then replaced or masked.

Build time finds bad data (`frames_check`); a record that fails anyway (a dataset built
by other code, a disk that rots) must not stop a run, as PySlowFast retries another video.
`flag_failures` runs a transform per record so that a failure yields a placeholder with
`_ok` False instead of an error: one element per record, in order, so the stream's
index arithmetic (and so exact resume) holds. Train batches then replace each failed
example by a copy of the next good one of the same batch (`fill_train_batches`); eval
batches mask it (`EvalBatches`). Both log each failure with the record's id.
"""

import logging
from typing import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

OK_KEY = '_ok'
ID_KEY = '_id'
# A record's readable name where the dataset has one; TFDS's own id otherwise.
_NAME_KEYS = ('video_id', 'file_name', 'tfds_id')
# Records decoded at once; each is its own small tf.data pipeline.
_PARALLEL_RECORDS = 16


class UnreadableBatchError(RuntimeError):
  """Every record of a batch failed to decode: nothing to fill it with."""


def record_name(record: dict) -> tf.Tensor:
  """string []: the record's id (`video_id`, `file_name`, else TFDS's `tfds_id`)."""
  for key in _NAME_KEYS:
    if key in record and record[key].dtype == tf.string:
      return record[key]
  return tf.constant('')


def flag_failures(ds: tf.data.Dataset, transform: Callable[..., dict], *,
                  per_record: int = 1) -> tf.data.Dataset:
  """`ds.map(transform)`, where a failing record yields zeros with `_ok` False.

  Args:
    ds: elements are the arguments of `transform`; the record is the last of them.
    transform: `(*element) -> example dict` of static shapes.
    per_record: examples per record: every value of the example has this leading axis
      when > 1 (the flags then do too).

  Returns:
    One example per element of `ds`, in order, each with `_ok` (bool) and `_id` (the
    record's name, string).
  """
  def flagged(*element):
    example = transform(*element)
    shape = [per_record] if per_record > 1 else []
    return {**example, OK_KEY: tf.fill(shape, True),
            ID_KEY: tf.fill(shape, record_name(element[-1]))}

  spec = ds.map(flagged).element_spec  # Traced only, for the placeholder's shapes.
  for key, value in spec.items():
    if not value.shape.is_fully_defined():
      raise ValueError(f'The transform gives {key} of shape {value.shape}: static shapes '
                       'are needed to stand in for a record that fails.')

  def one(*element):
    decoded = tf.data.Dataset.from_tensors(element).map(flagged).ignore_errors(
        log_warning=True)  # TensorFlow's warning says why; ours below says which record.
    name = record_name(element[-1])
    placeholder = {key: tf.zeros(value.shape, value.dtype) for key, value in spec.items()
                   if key not in (OK_KEY, ID_KEY)}
    placeholder[OK_KEY] = tf.zeros(spec[OK_KEY].shape, tf.bool)
    placeholder[ID_KEY] = tf.fill(spec[ID_KEY].shape, name)
    return decoded.concatenate(tf.data.Dataset.from_tensors(placeholder)).take(1)

  # Each inner dataset yields exactly one element, so a deterministic interleave keeps
  # the order of `ds` while decoding several records at once.
  return ds.interleave(one, cycle_length=_PARALLEL_RECORDS, block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _names(ids: np.ndarray) -> list[str]:
  return [i.decode('utf-8', 'replace') if isinstance(i, bytes) else str(i) for i in ids]


def fill_train_batches(batches: Iterable[dict],
                       where: Callable[[int], str]) -> Iterator[dict]:
  """Train batches without flags; a failed example becomes a copy of the next good one.

  The copy comes from the same batch, so the batch stays a pure function of its records
  and a resumed stream equals the uninterrupted one; a real example keeps the loss's
  scale and the batch's statistics, where zeros or a mask would change both.

  Args:
    batches: batches with `_ok` and `_id`.
    where: `where(k)` describes the position of the k-th batch (for the log).

  Yields:
    The batches without `_ok` and `_id`.

  Raises:
    UnreadableBatchError: every example of a batch failed.
  """
  failed = 0
  for k, batch in enumerate(batches):
    ok, ids = batch.pop(OK_KEY).astype(bool), batch.pop(ID_KEY)
    if ok.all():
      yield batch
      continue
    bad, good = np.flatnonzero(~ok), np.flatnonzero(ok)
    names = sorted(set(_names(ids[bad])))
    if not good.size:
      raise UnreadableBatchError(f'every record of the train batch at {where(k)} failed to '
                                 f'decode: {", ".join(names[:10])}')
    source = good[np.searchsorted(good, bad) % good.size]  # The next good one, wrapping.
    batch = {key: value.copy() for key, value in batch.items()}
    for value in batch.values():
      value[bad] = value[source]
    failed += len(names)
    log.warning('Skipped %s at %s: failed to decode; replaced by the next example of its '
                'batch (%d records skipped in this run so far).', ', '.join(names), where(k),
                failed)
    yield batch


class EvalBatches:
  """Eval batches without flags; failed examples are masked out and counted.

  Attributes:
    unreadable: examples of this pass that failed to decode (this process).
  """

  def __init__(self, batches: Iterator[dict]):
    self._batches = batches
    self.unreadable = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._batches)
    ok, ids = batch.pop(OK_KEY), batch.pop(ID_KEY)
    bad = ~ok
    if bad.any():
      batch['mask'] = batch['mask'] & ok
      names = _names(ids[bad])
      self.unreadable += len(names)
      log.warning('Eval skipped %s: failed to decode (%d so far in this pass).',
                  ', '.join(names), self.unreadable)
    return batch

  def close(self):
    close = getattr(self._batches, 'close', None)
    if close is not None:
      close()
