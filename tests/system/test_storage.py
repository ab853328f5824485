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
