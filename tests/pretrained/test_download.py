"""The download cache against a real HTTP server on 127.0.0.1: hits, damage, bad transfers."""

import hashlib
import os

import pytest

from mvitv2_jax.pretrained import download
from tests.helpers import golden
from tests.helpers import weights_server

URL = 'https://dl.fbaipublicfiles.com/mvit/mvitv2_models/MViTv2_TEST_tiny.pyth'
PATH = '/mvit/mvitv2_models/MViTv2_TEST_tiny.pyth'
BODY = (golden.DIR / 'tiny.pyth').read_bytes()  # A real (tiny) official checkpoint.
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server(monkeypatch, tmp_path):
  with weights_server.mirror(monkeypatch, {PATH: BODY}, tmp_path / 'cache') as running:
    yield running


def _fetch(**kwargs):
  return download.ensure_file(URL, download.cached_path(URL), **kwargs)


def _leftovers(path):
  """What the cache holds for `path`, besides its lock."""
  directory = os.path.dirname(path)
  return sorted(n for n in os.listdir(directory) if not n.endswith('.lock'))


def test_mirror_replaces_the_host_and_keeps_the_path(monkeypatch):
  monkeypatch.setenv(download.MIRROR_ENV, 'http://weights.internal/base/')
  assert download.source_url(URL) == 'http://weights.internal/base' + PATH
  monkeypatch.delenv(download.MIRROR_ENV)
  assert download.source_url(URL) == URL


def test_cache_dir_default_and_override(monkeypatch, tmp_path):
  monkeypatch.delenv(download.CACHE_ENV, raising=False)
  assert download.cache_dir() == os.path.expanduser('~/.cache/mvitv2_jax')
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path))
  assert download.cached_path(URL) == str(tmp_path / 'files' / PATH.lstrip('/'))


def test_download_records_size_and_sha256_then_hits_the_cache(server, capsys):
  path = _fetch()
  assert open(path, 'rb').read() == BODY
  record = download.read_record(path)
  assert (record['size'], record['sha256']) == (len(BODY), SHA)
  assert record['url'] == server.url + PATH
  assert f'Downloading {server.url + PATH}' in capsys.readouterr().err
  assert _leftovers(path) == ['MViTv2_TEST_tiny.pyth', 'MViTv2_TEST_tiny.pyth.record.json']
  assert _fetch() == path
  assert server.requests_for(PATH) == [None]  # The second call made no request.


def test_a_corrupted_cached_file_is_refused_named_and_downloaded_again(server, capsys):
  path = _fetch()
  with open(path, 'r+b') as f:
    f.seek(1000)
    f.write(b'\x00\x01\x02')
  capsys.readouterr()
  assert _fetch() == path
  err = capsys.readouterr().err
  assert f'warning: {path}: SHA-256 ' in err and 'moved to' in err
  assert open(path, 'rb').read() == BODY
  assert open(path + '.corrupt', 'rb').read() != BODY
  assert server.requests_for(PATH) == [None, None]


def test_a_truncated_cached_file_offline_is_one_line_and_never_trusted(server):
  path = _fetch()
  os.truncate(path, 100)
  server.faults[PATH] = weights_server.Fault(status=500)
  with pytest.raises(download.DownloadError) as error:
    _fetch()
  message = str(error.value)
  assert '\n' not in message and 'HTTP 500' in message and f'save it as {path}' in message
  assert not os.path.exists(path)  # Set aside as .corrupt: the next call cannot trust it.
  assert os.path.getsize(path + '.corrupt') == 100


def test_a_host_serving_another_file_than_recorded_is_refused(server):
  path = _fetch()
  os.remove(path)
  server.files[PATH] = BODY[:-1] + b'!'
  with pytest.raises(download.DownloadError, match='the host now serves another file'):
    _fetch()
  assert not os.path.exists(path)
  assert download.read_record(path)['sha256'] == SHA


def test_a_dropped_transfer_is_resumed_with_a_range_request(server):
  server.faults[PATH] = weights_server.Fault(cut_after=len(BODY) // 3)
  path = _fetch()
  assert open(path, 'rb').read() == BODY
  assert server.requests_for(PATH) == [None, f'bytes={len(BODY) // 3}-']
  assert _leftovers(path) == ['MViTv2_TEST_tiny.pyth', 'MViTv2_TEST_tiny.pyth.record.json']


def test_without_range_support_a_dropped_transfer_restarts(monkeypatch, tmp_path):
  with weights_server.mirror(monkeypatch, {PATH: BODY}, tmp_path, ranges=False) as server:
    server.faults[PATH] = weights_server.Fault(cut_after=1000)
    path = _fetch()
    assert open(path, 'rb').read() == BODY
    assert len(server.requests_for(PATH)) == 2


def test_a_lying_content_length_leaves_no_trusted_file_and_the_next_call_recovers(server):
  server.faults[PATH] = weights_server.Fault(extra_length=100)
  with pytest.raises(download.DownloadError) as error:
    _fetch()
  message = str(error.value)
  assert '\n' not in message and 'closed before the end of the file (3 attempts' in message
  path = download.cached_path(URL)
  assert not os.path.exists(path) and download.read_record(path) is None
  del server.faults[PATH]
  assert open(_fetch(), 'rb').read() == BODY


@pytest.mark.parametrize('status', [404, 500])
def test_an_http_error_is_one_line_with_the_url_and_how_to_place_the_file(server, status):
  server.faults[PATH] = weights_server.Fault(status=status)
  with pytest.raises(download.DownloadError) as error:
    _fetch()
  message = str(error.value)
  path = download.cached_path(URL)
  assert message.startswith(f'{server.url + PATH}: HTTP {status} ')
  assert f'download {server.url + PATH} by hand and save it as {path}' in message
  assert '--checkpoint PATH' in message and '\n' not in message
  assert _leftovers(path) == []


def test_no_server_is_one_line(monkeypatch, tmp_path):
  with weights_server.WeightsServer({}) as gone:
    url = gone.url
  monkeypatch.setenv(download.MIRROR_ENV, url)
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path))
  with pytest.raises(download.DownloadError, match=r'cannot connect .*save it as'):
    _fetch()


def test_a_download_of_the_wrong_size_is_refused_and_discarded(server):
  with pytest.raises(download.DownloadError) as error:
    _fetch(size=len(BODY) + 1)
  assert f'{len(BODY):,} bytes instead of {len(BODY) + 1:,} (the table)' in str(error.value)
  assert _leftovers(download.cached_path(URL)) == []
  with pytest.raises(download.DownloadError, match='SHA-256'):
    _fetch(sha256='0' * 64)
  assert _fetch(size=len(BODY), sha256=SHA)


def test_a_file_placed_by_hand_is_recorded_on_first_use(monkeypatch, tmp_path):
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path))
  path = download.manual_path('MVIT_B_16_CONV.pyth')
  with pytest.raises(download.DownloadError) as error:
    download.ensure_file(None, path, manual='https://drive.example/file')
  assert str(error.value) == (
      f'{path}: not in the cache and its host has no direct URL; download it from '
      f'https://drive.example/file and save it as {path} (or pass --checkpoint PATH)')
  os.makedirs(os.path.dirname(path), exist_ok=True)  # The lock made it.
  with open(path, 'wb') as f:
    f.write(BODY)
  assert download.ensure_file(None, path, manual='x') == path
  assert download.read_record(path)['sha256'] == SHA
  with open(path, 'ab') as f:
    f.write(b'more')
  with pytest.raises(download.DownloadError, match='bytes instead of'):
    download.ensure_file(None, path, manual='x')
