"""The file cache: atomic, resumable downloads pinned to the SHA-256 of their first download.

Layout under `cache_dir()` ($MVITV2_CACHE, default ~/.cache/mvitv2_jax):
  files/<url path>               a downloaded file, e.g. files/mvit/mvitv2_models/MViTv2_S_in1k.pyth
  files/<url path>.record.json   its size and SHA-256, written when it was first complete
  files/<url path>.part          an unfinished download (never read as the file); with
  files/<url path>.part.json     the URL and validator it may be resumed against
  files/manual/<filename>        a file whose host has no direct URL, placed by hand
A file is trusted only once its record is written, and only while it matches the record.
A download goes to `.part`, is checked (length, the expected size and SHA-256, those of an
earlier record), recorded, then renamed into place; an interrupted one is resumed with an
HTTP Range request (If-Range: the same version of the file) or restarted. A cached file
that no longer matches its record is named, set aside as `.corrupt` and downloaded again,
and the new download must match the record: a host that now serves another file is
refused. A file placed by hand is recorded the first time it is used.
$MVITV2_WEIGHTS_MIRROR (a base URL) replaces the scheme and host of every URL, keeping its path.
"""

import contextlib
import datetime
import fcntl
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

from mvitv2_jax.pretrained import progress as progress_lib

CACHE_ENV = 'MVITV2_CACHE'
MIRROR_ENV = 'MVITV2_WEIGHTS_MIRROR'
_CHUNK = 1 << 20
_ATTEMPTS = 3  # Connections per call: a dropped one is resumed from where it stopped.
_TIMEOUT_S = 60
_RECORD = '.record.json'
_PART = '.part'


class DownloadError(ValueError):
  """A file that could not be downloaded or verified; the one-line message says why and
  what to do."""


def cache_dir() -> str:
  """$MVITV2_CACHE, or ~/.cache/mvitv2_jax."""
  return os.path.abspath(os.path.expanduser(
      os.environ.get(CACHE_ENV) or os.path.join('~', '.cache', 'mvitv2_jax')))


def source_url(url: str) -> str:
  """`url`, or its path under $MVITV2_WEIGHTS_MIRROR when that is set."""
  mirror = os.environ.get(MIRROR_ENV)
  if not mirror:
    return url
  return mirror.rstrip('/') + urllib.parse.urlsplit(url).path


def cached_path(url: str) -> str:
  """Where the file of `url` lives in the cache: its URL path under files/."""
  path = urllib.parse.unquote(urllib.parse.urlsplit(url).path).lstrip('/')
  parts = [p for p in path.split('/') if p not in ('', '.', '..')]
  return os.path.join(cache_dir(), 'files', *parts)


def manual_path(filename: str) -> str:
  """Where a file without a direct URL is placed by hand."""
  return os.path.join(cache_dir(), 'files', 'manual', os.path.basename(filename))


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def read_record(path: str) -> dict | None:
  """The record of the cached file `path` ({'size', 'sha256', 'url', 'recorded'}), or None."""
  try:
    with open(path + _RECORD) as f:
      record = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise DownloadError(f'{path + _RECORD}: unreadable record ({e}); delete it to record '
                        'the file again') from None
  if not (isinstance(record, dict) and isinstance(record.get('size'), int)
          and isinstance(record.get('sha256'), str)):
    raise DownloadError(f'{path + _RECORD}: not a record of size and SHA-256; delete it to '
                        'record the file again')
  return record


def _write_json(path: str, value: dict):
  """Writes `path` whole or not at all."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_record(path: str, size: int, sha256: str, url: str):
  _write_json(path + _RECORD, {
      'size': size, 'sha256': sha256, 'url': url,
      'recorded': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')})


def mismatch(size: int, sha256: str, expected_size: int | None,
             expected_sha256: str | None) -> str | None:
  """How a file of `size` and `sha256` differs from what is expected, or None."""
  if expected_size is not None and size != expected_size:
    return f'{size:,} bytes instead of {expected_size:,}'
  if expected_sha256 is not None and sha256 != expected_sha256:
    return f'SHA-256 {sha256} instead of {expected_sha256}'
  return None


@contextlib.contextmanager
def _locked(path: str):
  """Holds an exclusive lock on `path`.lock: one process at a time fetches a file."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.lock', 'a') as f:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _expected(record: dict | None, size: int | None, sha256: str | None):
  """The size and SHA-256 a file must have: the record's, else those given."""
  if record is not None:
    return record['size'], record['sha256']
  return size, sha256


def ensure_file(url: str | None, path: str, *, size: int | None = None,
                sha256: str | None = None, manual: str = '', show_progress: bool = True) -> str:
  """The verified cached file at `path`, downloading `url` first if needed.

  Args:
    url: where to download from (before the mirror substitution), or None when the file
      can only be placed by hand.
    path: where the file lives in the cache (`cached_path(url)` or `manual_path`).
    size, sha256: what the file must be, when known in advance.
    manual: where to get the file by hand, for messages.
    show_progress: draw a progress bar on stderr.

  Returns:
    `path`.

  Raises:
    DownloadError: one line naming the file, what went wrong and what to do.
  """
  with _locked(path):
    record = read_record(path)
    if os.path.exists(path):
      actual_size, actual_sha = os.path.getsize(path), sha256_of(path)
      problem = mismatch(actual_size, actual_sha, *_expected(record, size, sha256))
      if problem is None:
        if record is None:  # Placed by hand: trusted from now on as it is.
          write_record(path, actual_size, actual_sha, url or manual or 'placed by hand')
        return path
      if url is None:
        raise DownloadError(f'{path}: {problem} (the record of its first use); replace it with '
                            f'the original file from {manual}, or delete {path + _RECORD} to '
                            'accept this one')
      os.replace(path, path + '.corrupt')
      print(f'warning: {path}: {problem} (the record of its first download); moved to '
            f'{path}.corrupt, downloading it again', file=sys.stderr, flush=True)
    if url is None:
      raise DownloadError(f'{path}: not in the cache and its host has no direct URL; download '
                          f'it from {manual} and save it as {path} (or pass --checkpoint PATH)')
    _download(url, path, record, size, sha256, show_progress)
    return path


def _how_to_place(url: str, path: str) -> str:
  return (f'download {url} by hand and save it as {path} (or pass --checkpoint PATH); '
          f'${MIRROR_ENV} can name an internal mirror')


def _download(url: str, path: str, record: dict | None, size: int | None,
              sha256: str | None, show_progress: bool):
  """Downloads `url` into `path` (through `.part`), checked and recorded."""
  source = source_url(url)
  expected_size, expected_sha = _expected(record, size, sha256)
  last_error = ''
  for _ in range(_ATTEMPTS):
    try:
      complete = _transfer(source, path + _PART, expected_sha is not None, show_progress)
    except urllib.error.HTTPError as e:
      raise DownloadError(f'{source}: HTTP {e.code} {e.reason}; '
                          f'{_how_to_place(source, path)}') from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
      reason = getattr(e, 'reason', None) or e
      last_error = f'{type(e).__name__}: {reason}'.splitlines()[0][:200]
      if isinstance(e, urllib.error.URLError) and not isinstance(e.reason, socket.timeout):
        raise DownloadError(f'{source}: cannot connect ({reason}); '
                            f'{_how_to_place(source, path)}') from None
      continue
    if complete:
      break
    last_error = 'the connection closed before the end of the file'
  else:
    raise DownloadError(f'{source}: {last_error} ({_ATTEMPTS} attempts; the part received is '
                        f'kept in {path + _PART} and resumed next time); '
                        f'{_how_to_place(source, path)}')
  part = path + _PART
  actual_size, actual_sha = os.path.getsize(part), sha256_of(part)
  problem = mismatch(actual_size, actual_sha, expected_size, expected_sha)
  if problem is not None:
    _discard(part)
    what = 'the record of its first download' if record else 'the table'
    hint = (f'the host now serves another file: delete {path + _RECORD} to accept it'
            if record else 'the file is not the one the table names')
    raise DownloadError(f'{source}: the download has {problem} ({what}); {hint}')
  write_record(path, actual_size, actual_sha, source)
  os.replace(part, path)
  _discard(part, keep_data=True)


def _discard(part: str, keep_data: bool = False):
  for name in (part + '.json',) if keep_data else (part, part + '.json'):
    with contextlib.suppress(FileNotFoundError):
      os.remove(name)


def _read_part_meta(part: str) -> dict:
  try:
    with open(part + '.json') as f:
      meta = json.load(f)
    return meta if isinstance(meta, dict) else {}
  except (OSError, ValueError):
    return {}


def _transfer(url: str, part: str, verified_later: bool, show_progress: bool) -> bool:
  """One HTTP request appending to (or restarting) `part`.

  Args:
    url: the source.
    part: the unfinished file.
    verified_later: a SHA-256 is known, so a resumed prefix is checked at the end even
      when the server gives no validator.
    show_progress: draw the bar.

  Returns:
    True when `part` holds the whole file as the server declared it.
  """
  meta = _read_part_meta(part)
  have = os.path.getsize(part) if os.path.exists(part) else 0
  validator = meta.get('validator')
  headers = {'User-Agent': 'mvitv2_jax'}
  if have and meta.get('url') == url and (validator or verified_later):
    headers['Range'] = f'bytes={have}-'
    if validator:
      headers['If-Range'] = validator
  else:
    have = 0
  try:
    response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=_TIMEOUT_S)
  except urllib.error.HTTPError as e:
    if e.code == 416 and have:  # Past the end: the part is stale; start again.
      _discard(part)
      return False
    raise
  with response:
    total = _declared_total(response, have)
    if total == -1:  # A range the request did not ask for: start again.
      _discard(part)
      return False
    if response.status != 206:
      have = 0  # A full response: the server ignored the range or the file changed.
    validator = response.headers.get('ETag') or response.headers.get('Last-Modified')
    _write_json(part + '.json', {'url': url, 'validator': validator, 'total': total})
    bar = progress_lib.Progress(url, total, have) if show_progress else None
    with open(part, 'ab' if have else 'wb') as f:
      while chunk := response.read(_CHUNK):
        f.write(chunk)
        if bar:
          bar.update(len(chunk))
      f.flush()
      os.fsync(f.fileno())
    if bar:
      bar.close()
  return total is None or os.path.getsize(part) == total


def _declared_total(response, have: int) -> int | None:
  """The whole file's size as the response declares it (Content-Range or Content-Length):
  None if it does not say, -1 for a range other than the one asked for."""
  if response.status == 206:
    match = re.fullmatch(r'bytes (\d+)-\d+/(\d+)', response.headers.get('Content-Range', ''))
    return int(match.group(2)) if match and int(match.group(1)) == have else -1
  length = response.headers.get('Content-Length')
  return int(length) if length and length.isdigit() else None
