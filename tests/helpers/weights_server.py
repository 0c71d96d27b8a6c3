"""A real HTTP server on 127.0.0.1 standing in for the original checkpoint hosts, for tests only.

It serves files from memory under their original-looking paths, honours Range and
If-Range requests (ETag validators) unless told not to, logs every request, and can
fail on purpose: an HTTP status, a transfer cut short after some bytes, a Content-Length
that claims more than it sends.
"""

import contextlib
import dataclasses
import hashlib
import http.server
import re
import threading


@dataclasses.dataclass
class Fault:
  """How the server misbehaves for one path.

  Attributes:
    status: answer every request with this HTTP status (e.g. 500, 404).
    cut_after: send only this many body bytes, then close (Content-Length stays whole).
    cut_times: how many responses are cut (then it serves whole ones).
    extra_length: declare this many bytes more than the body has (a lying Content-Length).
  """
  status: int | None = None
  cut_after: int | None = None
  cut_times: int = 1
  extra_length: int = 0


class WeightsServer:
  """Start with `with WeightsServer(files) as server:`; `server.url` is its base URL.

  Args:
    files: URL path -> bytes.
    ranges: honour Range requests.
  """

  def __init__(self, files: dict[str, bytes], ranges: bool = True):
    self.files, self.ranges = dict(files), ranges
    self.faults: dict[str, Fault] = {}
    self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
    self._lock = threading.Lock()
    self._server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), self._handler())
    self._server.daemon_threads = True
    self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

  @property
  def url(self) -> str:
    return f'http://127.0.0.1:{self._server.server_address[1]}'

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._server.shutdown()
    self._server.server_close()
    self._thread.join(timeout=10)

  def requests_for(self, path: str) -> list[str | None]:
    """The Range headers of the requests made for `path` (None: a whole-file request)."""
    with self._lock:
      return [r for p, r in self.requests if p == path]

  def _handler(self):
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      """GET only; see `WeightsServer`."""

      def log_message(self, *args):  # Quiet: pytest shows failures, not access logs.
        pass

      def do_GET(self):  # pylint: disable=invalid-name
        with server._lock:  # pylint: disable=protected-access
          server.requests.append((self.path, self.headers.get('Range')))
        body = server.files.get(self.path)
        fault = server.faults.get(self.path, Fault())
        if fault.status is not None:
          self.send_error(fault.status)
          return
        if body is None:
          self.send_error(404)
          return
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        start = self._range_start(etag, len(body))
        if start == -1:
          self.send_response(416)
          self.send_header('Content-Range', f'bytes */{len(body)}')
          self.send_header('Content-Length', '0')
          self.end_headers()
          return
        part = body[start:]
        self.send_response(206 if start else 200)
        if start:
          self.send_header('Content-Range', f'bytes {start}-{len(body) - 1}/{len(body)}')
        self.send_header('Content-Length', str(len(part) + fault.extra_length))
        self.send_header('ETag', etag)
        if server.ranges:
          self.send_header('Accept-Ranges', 'bytes')
        self.end_headers()
        if fault.cut_after is not None and fault.cut_times > 0:
          fault.cut_times -= 1
          part = part[:fault.cut_after]
        self.wfile.write(part)
        self.wfile.flush()
        if fault.cut_after is not None or fault.extra_length:
          self.close_connection = True

      def _range_start(self, etag: str, size: int) -> int:
        """The first byte to send: 0 (whole file), the range start, or -1 (unsatisfiable)."""
        match = re.fullmatch(r'bytes=(\d+)-', self.headers.get('Range') or '')
        if not server.ranges or not match:
          return 0
        if self.headers.get('If-Range') not in (None, etag):
          return 0  # The file changed: the whole new one.
        start = int(match.group(1))
        return start if start < size else -1

    return Handler


@contextlib.contextmanager
def mirror(monkeypatch, files: dict[str, bytes], cache_dir, **kwargs):
  """A running server as $MVITV2_WEIGHTS_MIRROR, and `cache_dir` as $MVITV2_CACHE."""
  with WeightsServer(files, **kwargs) as server:
    monkeypatch.setenv('MVITV2_WEIGHTS_MIRROR', server.url)
    monkeypatch.setenv('MVITV2_CACHE', str(cache_dir))
    yield server


def register_checkpoint(monkeypatch, row):
  """Adds table row `row` (a `pretrained.Checkpoint`) until `monkeypatch` is undone."""
  from mvitv2_jax.pretrained import loading  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(loading._BY_NAME, row.name, row)  # pylint: disable=protected-access


HOST = 'https://dl.fbaipublicfiles.com'
# The tiny golden checkpoints as released files of test-only variants: the file under
# tests/golden and the URL path it is served at.
TINY_IMAGE = dict(golden_file='tiny.pyth', path='/mvit/mvitv2_models/MViTv2_TEST_tiny.pyth')
TINY_VIDEO = dict(golden_file='video/tiny_v2.pyth',
                  path='/pyslowfast/model_zoo/mvitv2/pysf_video_models/MViTv2_TEST_tiny_v2.pyth')


def tiny_rows():
  """Table rows of the tiny golden image and video models (variants `mvitv2_test_tiny`,
  `mvitv2_test_tiny_v2`, registered by `register_tiny`), with the file each serves."""
  from mvitv2_jax.pretrained import table  # pylint: disable=g-import-not-at-top
  from tests.helpers import golden  # pylint: disable=g-import-not-at-top
  image = table.Checkpoint(
      name='mvitv2_test_tiny', family='mvit', task='classification', model='mvitv2_test_tiny',
      dataset='recipe weights', label_set='imagenet-1k', num_classes=10, resolution=64,
      preprocessing=table.Preprocessing(table.IMAGENET_MEAN, table.IMAGENET_STD, resize=73,
                                        crop=64, interpolation='bicubic'),
      source='tests/golden', url=HOST + TINY_IMAGE['path'])
  video = table.Checkpoint(
      name='mvitv2_test_tiny_v2.k400', family='mvit', task='classification',
      model='mvitv2_test_tiny_v2', dataset='recipe weights', label_set='kinetics-400',
      num_classes=10, resolution=32, frames=4,
      preprocessing=table.Preprocessing(table.KINETICS_MEAN, table.KINETICS_STD, resize=36,
                                        crop=32, interpolation='bilinear', sampling_rate=4),
      source='tests/golden', url=HOST + TINY_VIDEO['path'])
  files = {TINY_IMAGE['path']: (golden.DIR / TINY_IMAGE['golden_file']).read_bytes(),
           TINY_VIDEO['path']: (golden.DIR / TINY_VIDEO['golden_file']).read_bytes()}
  return image, video, files


def register_tiny(monkeypatch):
  """Registers the tiny variants and their rows; returns (image row, video row, files)."""
  from tests.helpers import golden  # pylint: disable=g-import-not-at-top
  from tests.helpers import variants  # pylint: disable=g-import-not-at-top
  image, video, files = tiny_rows()
  variants.register(monkeypatch, 'mvitv2_test_tiny', dict(golden.TINY))
  base = dict(variants_of('mvitv2_s_16x4'))
  variants.register(monkeypatch, 'mvitv2_test_tiny_v2', dict(
      base, embed_dim=8, depths=(1, 1, 2, 1), image_size=32, num_frames=4,
      kv_stride=(1, 4, 4), num_classes=10))
  register_checkpoint(monkeypatch, image)
  register_checkpoint(monkeypatch, video)
  return image, video, files


def variants_of(name: str) -> dict:
  from mvitv2_jax import models  # pylint: disable=g-import-not-at-top
  return models.family_of(name).variants[name]
