"""mvit_jax.system.storage against a real GCS server (fake-gcs-server) and on local disk: the same calls, the
same results."""
import os
import urllib.request

import pytest

from mvit_jax.system import storage


@pytest.fixture(params=['local', 'gcs'])
def root(request, tmp_path):
  if request.param == 'local':
    return str(tmp_path / 'root')
  return request.getfixturevalue('bucket') + '/root'


def test_write_read_list_and_remove(root):
  storage.makedirs(root)
  storage.write_text(storage.join(root, 'a', 'x.txt'), 'hello')
  storage.write_bytes(storage.join(root, 'b.bin'), b'\x00\x01')
  assert storage.read_text(storage.join(root, 'a', 'x.txt')) == 'hello'
  assert storage.read_bytes(storage.join(root, 'b.bin')) == b'\x00\x01'
  assert sorted(storage.listdir(root)) == ['a', 'b.bin']
  assert storage.isdir(storage.join(root, 'a')) and storage.isfile(storage.join(root, 'b.bin'))
  assert not storage.exists(storage.join(root, 'missing'))
  storage.remove_tree(storage.join(root, 'a'))
  assert storage.listdir(root) == ['b.bin']


def test_move_a_folder_keeps_every_file_and_removes_the_source(root):
  for rel in ('d/1.txt', 'd/sub/2.txt'):
    storage.write_text(storage.join(root, *rel.split('/')), rel)
  storage.move(storage.join(root, 'd'), storage.join(root, 'moved'))
  assert not storage.exists(storage.join(root, 'd'))
  assert storage.read_text(storage.join(root, 'moved', 'sub', '2.txt')) == 'd/sub/2.txt'
  assert storage.read_text(storage.join(root, 'moved', '1.txt')) == 'd/1.txt'


@pytest.mark.parametrize('block_bytes', [1 << 20, 1024])  # The object in memory whole / through the block cache.
def test_open_file_reads_with_seeks(root, block_bytes, monkeypatch):
  monkeypatch.setattr(storage, 'READ_BLOCK_BYTES', block_bytes)
  data = os.urandom(3 * 1024 + 7)
  storage.write_bytes(storage.join(root, 'blob'), data)
  with storage.open_file(storage.join(root, 'blob'), 'rb') as f:
    assert getattr(f, 'size', len(data)) == len(data)
    f.seek(1000)
    assert f.read(10) == data[1000:1010]
    f.seek(0)
    assert f.read() == data


def test_a_large_object_is_read_in_blocks_and_its_first_block_once(root, monkeypatch):
  monkeypatch.setattr(storage, 'READ_BLOCK_BYTES', 1024)
  data = os.urandom(3 * 1024 + 7)
  storage.write_bytes(storage.join(root, 'blob'), data)
  ranges = []
  if storage.is_url(root):
    import gcsfs  # pylint: disable=g-import-not-at-top  (after the `bucket` fixture: it reads its settings on import)
    fetch_range = gcsfs.core.GCSFile._fetch_range  # pylint: disable=protected-access

    def recording(self, start=None, end=None):
      ranges.append((start, end))
      return fetch_range(self, start, end)

    monkeypatch.setattr(gcsfs.core.GCSFile, '_fetch_range', recording)
  with storage.open_file(storage.join(root, 'blob'), 'rb') as f:
    assert f.read(100) == data[:100]
    f.seek(1500)
    assert f.read(1000) == data[1500:2500]
    f.seek(3000)
    assert f.read() == data[3000:]
    f.seek(10)
    assert f.read(5) == data[10:15]
  if storage.is_url(root):  # The first block came with the open; the other three, once each.
    assert sorted(ranges) == [(1024, 2048), (2048, 3072), (3072, 4096)]


def test_upload_tree_copies_the_marker_last(tmp_path, bucket):
  local = tmp_path / 'out'
  (local / 'params').mkdir(parents=True)
  (local / 'params' / 'p').write_text('p')
  (local / 'model.json').write_text('{}')
  storage.upload_tree(str(local), bucket + '/model', last='model.json')
  assert storage.read_text(bucket + '/model/params/p') == 'p'
  assert storage.read_text(bucket + '/model/model.json') == '{}'


def test_local_paths_resolve_and_urls_stay(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert storage.resolve('run') == str(tmp_path / 'run')
  assert storage.resolve('gs://b/run') == 'gs://b/run'
  assert storage.join('gs://b/run', 'checkpoints', '5') == 'gs://b/run/checkpoints/5'
  assert storage.parent('gs://b/run/x.csv') == 'gs://b/run'


def test_a_listing_sees_what_another_client_wrote_after_the_last_listing(gcs_server, bucket):
  """Other hosts write to the same workdir: no listing may come from a cache."""
  storage.write_text(f'{bucket}/run/a', 'a')
  assert storage.listdir(f'{bucket}/run') == ['a']
  assert not storage.exists(f'{bucket}/run/b')
  upload = urllib.request.Request(f'{gcs_server.url}/upload/storage/v1/b/{bucket[5:]}/o?uploadType=media&name=run/b',
                                  data=b'b', method='POST')
  urllib.request.urlopen(upload, timeout=10).close()
  assert sorted(storage.listdir(f'{bucket}/run')) == ['a', 'b']
  assert storage.exists(f'{bucket}/run/b')
