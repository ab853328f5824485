"""Data in a bucket (a real GCS server, fake-gcs-server): manifests, classes files, videos and frame folders at
gs:// URLs give exactly the frames the same files give on local disk; an object that cannot be fetched is a bad
video, skipped and counted; scan, preview and the synthetic dataset read and write buckets."""
import json
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image
import pytest

from mvit_jax.data import config as config_lib
from mvit_jax.data import decode
from mvit_jax.data import pipeline
from mvit_jax.data import sources
from mvit_jax.data import synthetic
from mvit_jax.system import storage
from tests import testlib

NUM_CLASSES = 3


def upload(local_folder, url: str) -> str:
  storage.upload_tree(str(local_folder), url)
  return url


def eval_config(root: str, manifest: str, **overrides):
  """Two temporal views per video at native size (the index stripes stay readable), no workers."""
  cfg = config_lib.default_data_config()
  cfg.root, cfg.eval_manifest, cfg.train_manifest, cfg.num_classes = root, manifest, manifest, NUM_CLASSES
  cfg.num_frames, cfg.sampling_rate, cfg.target_fps = 4, 2, 30.0
  cfg.test_short_side = cfg.crop_size = testlib.HEIGHT
  cfg.test_num_clips, cfg.test_num_crops = 2, 1
  cfg.num_workers = 0
  cfg.update(overrides)
  return cfg


def eval_batches(cfg, batch_size: int = 4) -> list[dict]:
  it = pipeline.make_eval_iterator(cfg, num_classes=NUM_CLASSES, global_batch_size=batch_size, process_index=0,
                                   process_count=1)
  batches = [{k: np.array(v) for k, v in batch.items()} for batch in it]
  it.close()
  return batches


@pytest.fixture
def videos(tmp_path, bucket):
  """(local folder, its copy in the bucket): index videos with the mp4 index at the end, in front (faststart), and
  with audio and a space in the name, and a manifest of them (relative paths) in each."""
  local = tmp_path / 'videos'
  local.mkdir()
  testlib.write_index_video(str(local / 'v0.mp4'), 40, video_id=0, gop=8)
  testlib.write_index_video(str(local / 'v1.mp4'), 50, video_id=1, gop=16, faststart=True)
  testlib.write_index_video(str(local / 'v 2.mp4'), 30, video_id=2, audio_seconds=1.0)
  testlib.write_manifest(str(local / 'val.csv'), [('v0.mp4', 0), ('v1.mp4', 1), ('v 2.mp4', 2)])
  return local, upload(local, f'{bucket}/videos')


def test_videos_in_a_bucket_decode_to_the_frames_of_local_files(videos):
  local, url = videos
  records = sources.read_manifest(f'{url}/val.csv', url)
  assert [r.path for r in records] == [f'{url}/v0.mp4', f'{url}/v1.mp4', f'{url}/v 2.mp4']
  for record in records:
    local_path = str(local / storage.name(record.path))
    for index_fn in (lambda n, fps: np.arange(n), lambda n, fps: np.array([n - 1, 3, 3, 17])):
      for short_side in (0, 30):
        expected = decode.decode_video(local_path, index_fn, short_side=short_side)
        clip = decode.decode_video(record.path, index_fn, short_side=short_side)
        np.testing.assert_array_equal(clip.frames, expected.frames)
        np.testing.assert_array_equal(clip.indices, expected.indices)
        assert (clip.fps, clip.num_video_frames, clip.num_decoded) == (
            expected.fps, expected.num_video_frames, expected.num_decoded)


def test_videos_larger_than_a_block_decode_through_the_block_cache(videos, monkeypatch):
  local, url = videos
  monkeypatch.setattr(storage, 'READ_BLOCK_BYTES', 1024)
  index_fn = lambda n, fps: np.array([n - 1, 0, 17, 3])
  for name in ('v0.mp4', 'v1.mp4', 'v 2.mp4'):
    assert (local / name).stat().st_size > 4 * 1024
    for head in (None, storage.read_heads([f'{url}/{name}'])[0]):
      clip = decode.decode_video(f'{url}/{name}', index_fn, head=head)
      np.testing.assert_array_equal(clip.frames, decode.decode_video(str(local / name), index_fn).frames)


@pytest.mark.parametrize('num_workers', [0, pytest.param(2, marks=pytest.mark.slow)])
def test_eval_loader_gives_the_same_batches_from_a_bucket(videos, num_workers):
  local, url = videos
  expected = eval_batches(eval_config(str(local), str(local / 'val.csv')))
  batches = eval_batches(eval_config(url, f'{url}/val.csv', num_workers=num_workers))
  assert len(batches) == len(expected) == 2
  for batch, want in zip(batches, expected):
    assert batch.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(batch[key], want[key])


def train_batches(cfg, num_batches: int, batch_size: int = 4) -> list[dict]:
  it = pipeline.make_train_iterator(cfg, num_classes=NUM_CLASSES, global_batch_size=batch_size, seed=7,
                                    process_index=0, process_count=1)
  batches = [{k: np.array(v) for k, v in next(it).items()} for _ in range(num_batches)]
  it.close()
  return batches


@pytest.mark.parametrize('num_workers', [0, pytest.param(2, marks=pytest.mark.slow)])
def test_train_loader_gives_the_same_batches_from_a_bucket(videos, num_workers):
  """Read ahead and decoded in the worker (from a bucket) or decoded in the read threads (local files), the clips
  get the same random draws, a missing video the same replacement."""
  local, url = videos
  rows = [('v0.mp4', 0), ('missing.mp4', 1), ('v1.mp4', 1), ('v 2.mp4', 2)]
  for root in (str(local), url):
    storage.write_text(f'{root}/train.csv', ''.join(f'{path} {label}\n' for path, label in rows))
  skipped = pipeline.skip_stats().skipped
  expected = train_batches(eval_config(str(local), f'{local}/train.csv', max_failure_fraction=1.0), 6)
  assert pipeline.skip_stats().skipped > skipped  # 12 videos, 3 epochs: the missing one was drawn and replaced.
  batches = train_batches(eval_config(url, f'{url}/train.csv', max_failure_fraction=1.0, num_workers=num_workers), 6)
  for batch, want in zip(batches, expected, strict=True):
    assert batch.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(batch[key], want[key])


@pytest.mark.parametrize('num_workers', [0, pytest.param(2, marks=pytest.mark.slow)])
def test_a_train_loader_reading_a_bucket_resumes_where_it_stopped(videos, num_workers):
  _, url = videos
  cfg = eval_config(url, f'{url}/val.csv', num_workers=num_workers)
  it = pipeline.make_train_iterator(cfg, num_classes=NUM_CLASSES, global_batch_size=4, seed=3, process_index=0,
                                    process_count=1)
  next(it)
  state = json.loads(json.dumps(it.get_state()))  # What grain's orbax handler writes.
  expected = [{k: np.array(v) for k, v in next(it).items()} for _ in range(3)]  # Crosses an epoch (1.5 batches).
  it.close()
  resumed = pipeline.make_train_iterator(cfg, num_classes=NUM_CLASSES, global_batch_size=4, seed=3,
                                         process_index=0, process_count=1)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  resumed.close()


@pytest.fixture
def reads_and_decodes(monkeypatch):
  """(fetches, peak): the number of URLs of each storage.read_heads call, the first three of which must run at once
  (BrokenBarrierError otherwise), and the most decode_video calls that ran at once."""
  read_heads, decode_video = storage.read_heads, decode.decode_video
  fetches, active, peak, lock = [], [0], [0], threading.Lock()
  first_three = threading.Barrier(3, timeout=60)

  def waiting_read_heads(urls):
    fetches.append(len(urls))
    if len(fetches) <= 3:
      first_three.wait()
    return read_heads(urls)

  def counting_decode(path, *args, **kwargs):
    with lock:
      active[0] += 1
      peak[0] = max(peak[0], active[0])
    time.sleep(0.02)  # Long enough for a second decode to start, were there one.
    with lock:
      active[0] -= 1
    return decode_video(path, *args, **kwargs)

  monkeypatch.setattr(storage, 'read_heads', waiting_read_heads)
  monkeypatch.setattr(decode, 'decode_video', counting_decode)
  return fetches, peak


def test_a_train_loader_fetches_batches_from_a_bucket_at_once_and_decodes_one_clip_at_a_time(videos,
                                                                                              reads_and_decodes):
  """read_prefetch batches are fetched side by side, each batch's objects (3 videos, 2 clips each) in one call (one
  request's latency), and the clips are decoded one after another, as from local files."""
  _, url = videos
  fetches, peak = reads_and_decodes
  assert len(train_batches(eval_config(url, f'{url}/val.csv', read_threads=1, read_prefetch=3), 4, 6)) == 4
  assert set(fetches) == {3} and len(fetches) >= 4 and peak[0] == 1


def test_an_eval_loader_fetches_each_video_once_for_its_views_and_decodes_one_clip_at_a_time(videos,
                                                                                             reads_and_decodes):
  """Three batches of one video's two views each: fetched side by side, each video once, decoded one clip (two per
  video) after another."""
  _, url = videos
  fetches, peak = reads_and_decodes
  assert len(eval_batches(eval_config(url, f'{url}/val.csv', read_threads=1, read_prefetch=3), 2)) == 3
  assert fetches == [1, 1, 1] and peak[0] == 1


def test_a_loader_decodes_local_files_read_threads_at_a_time(videos, reads_and_decodes):
  local, _ = videos
  fetches, peak = reads_and_decodes
  for read_threads in (1, 2):
    peak[0] = 0
    cfg = eval_config(str(local), f'{local}/val.csv', test_num_clips=1, read_threads=read_threads, read_prefetch=3)
    assert len(eval_batches(cfg, batch_size=1)) == 3
    assert not fetches and peak[0] == read_threads


def test_a_tfds_dataset_in_a_bucket_is_remote(monkeypatch):
  monkeypatch.setattr(sources.TfdsSource, '_data_source', lambda self: [])
  assert sources.TfdsSource('fake', 'train', data_dir='gs://b/tfds').remote
  assert not sources.TfdsSource('fake', 'train', data_dir='/data/tfds').remote


def test_manifest_rows_may_be_urls_and_roots_local_or_urls(videos, tmp_path):
  local, url = videos
  manifest = tmp_path / 'mixed.csv'
  manifest.write_text(f'v0.mp4 0\n{url}/v 2.mp4 2\n/abs/x.mp4 1\n')
  assert [r.path for r in sources.read_manifest(str(manifest), url)] == [
      f'{url}/v0.mp4', f'{url}/v 2.mp4', '/abs/x.mp4']
  assert [r.path for r in sources.read_manifest(str(manifest), str(local))] == [
      str(local / 'v0.mp4'), f'{url}/v 2.mp4', '/abs/x.mp4']


def test_manifest_and_classes_file_in_a_bucket(bucket):
  storage.write_text(f'{bucket}/classes.txt', 'a\nb\n\nc\n')
  storage.write_text(f'{bucket}/train.csv', 'x.mp4 0\n')
  cfg = config_lib.default_data_config()
  cfg.train_manifest, cfg.classes_file = f'{bucket}/train.csv', f'{bucket}/classes.txt'
  assert sources.read_class_names(cfg.classes_file) == ['a', 'b', 'c']
  assert sources.num_classes_from_config(cfg) == 3
  assert len(sources.read_manifest(cfg.train_manifest)) == 1
  storage.write_text(cfg.train_manifest, 'x.mp4 0\ny.mp4 1\n')  # A rewritten object (new generation) is read again.
  assert [r.path for r in sources.read_manifest(cfg.train_manifest, bucket)] == [f'{bucket}/x.mp4', f'{bucket}/y.mp4']
  with pytest.raises(sources.ManifestError, match=f"cannot read manifest '{bucket}/trian.csv': No such file"):
    sources.read_manifest(f'{bucket}/trian.csv')
  with pytest.raises(sources.ManifestError, match=f"cannot read classes file '{bucket}/nope.txt': No such file"):
    sources.read_class_names(f'{bucket}/nope.txt')


def write_frame_folders(folder) -> None:
  """'vid 0' and 'vid 1': 31 JPEG frames coding (v << 8 | i), and a file the pattern must skip."""
  for v in range(2):
    os.makedirs(folder / f'vid {v}')
    for i in range(31):
      Image.fromarray(testlib.code_frame(v << 8 | i)).save(folder / f'vid {v}' / f'img_{i:05d}.jpg', quality=95)
    (folder / f'vid {v}' / 'notes.txt').write_text('not a frame')


def test_frame_folders_in_a_bucket_decode_to_the_frames_of_local_folders(tmp_path, bucket):
  write_frame_folders(tmp_path)
  url = upload(tmp_path, f'{bucket}/frames')
  for v in range(2):
    for short_side in (0, 30):
      index_fn = lambda n, fps: np.array([0, n - 1, 7, 7])
      expected = decode.decode_frame_folder(str(tmp_path / f'vid {v}'), index_fn, fps=30.0, short_side=short_side)
      clip = decode.decode_frame_folder(f'{url}/vid {v}', index_fn, fps=30.0, short_side=short_side)
      np.testing.assert_array_equal(clip.frames, expected.frames)
      assert clip.num_video_frames == expected.num_video_frames == 31
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [1 << 8, 1 << 8 | 30, 1 << 8 | 7, 1 << 8 | 7])
  storage.write_text(f'{url}/val.csv', 'vid 0 0\nvid 1 1\n')
  cfg = eval_config(url, f'{url}/val.csv', dataset_kind='frames', frames_fps=30.0)
  source = sources.make_source(cfg, 'eval', NUM_CLASSES)
  assert testlib.read_codes(source.load(1, lambda n, fps: np.array([5])).frames).tolist() == [1 << 8 | 5]
  with pytest.raises(decode.DecodeError, match='no frames matching'):
    decode.decode_frame_folder(f'{url}/missing', index_fn, fps=30.0)


def test_a_clip_s_frames_in_a_bucket_are_requested_at_once(tmp_path, bucket, monkeypatch, fail_reads_of):
  """One request's latency per clip, not one per frame; a frame that cannot be fetched fails the clip, named."""
  write_frame_folders(tmp_path)
  url = upload(tmp_path, f'{bucket}/frames')
  read_many, calls = storage.read_many, []
  monkeypatch.setattr(storage, 'read_many', lambda urls, *args: calls.append(list(urls)) or read_many(urls, *args))
  index_fn = lambda n, fps: np.array([9, 2, 9, 4])
  clip = decode.decode_frame_folder(f'{url}/vid 0', index_fn, fps=30.0)
  assert testlib.read_codes(clip.frames).tolist() == [9, 2, 9, 4]
  assert calls == [[f'{url}/vid 0/img_{i:05d}.jpg' for i in (2, 4, 9)]]
  fail_reads_of('img_00004.jpg')
  with pytest.raises(decode.DecodeError, match='cannot read frame .*/vid 0/img_00004.jpg: .*Service Unavailable'):
    decode.decode_frame_folder(f'{url}/vid 0', index_fn, fps=30.0)


def store_error() -> Exception:
  """What gcsfs raises when the store still answers 503 after its retries (import gcsfs after `bucket`: it reads
  its settings on import)."""
  import gcsfs  # pylint: disable=g-import-not-at-top
  return gcsfs.retry.HttpError({'code': 503, 'message': 'Service Unavailable'})


@pytest.fixture
def fail_reads_of(bucket, monkeypatch):
  """fail_reads_of(name): every read of objects called `name` (the first block, or a range of a larger one)
  fails with store_error()."""
  del bucket
  import gcsfs  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  fetch_range = gcsfs.core.GCSFile._fetch_range  # pylint: disable=protected-access
  fs = epath.backend.fsspec_backend.fs('gs://any')  # The one gcsfs instance every gs:// path uses.
  cat_file, async_cat_file = fs.cat_file, fs._cat_file  # pylint: disable=protected-access

  def install(name: str):
    def failing(self, start=None, end=None):
      if self.path.endswith('/' + name):
        raise store_error()
      return fetch_range(self, start, end)

    def failing_cat(path, *args, **kwargs):
      if path.endswith('/' + name):
        raise store_error()
      return cat_file(path, *args, **kwargs)

    async def async_failing_cat(path, *args, **kwargs):  # What cat_ranges (storage.read_heads) calls.
      if path.endswith('/' + name):
        raise store_error()
      return await async_cat_file(path, *args, **kwargs)

    monkeypatch.setattr(gcsfs.core.GCSFile, '_fetch_range', failing)
    monkeypatch.setattr(fs, 'cat_file', failing_cat)
    monkeypatch.setattr(fs, '_cat_file', async_failing_cat)
  return install


def test_objects_that_cannot_be_fetched_are_skipped_and_counted(videos, fail_reads_of, caplog):
  _, url = videos
  storage.write_bytes(f'{url}/empty.mp4', b'')
  storage.copy_file(f'{url}/v0.mp4', f'{url}/unreadable.mp4')
  fail_reads_of('unreadable.mp4')
  rows = [('v0.mp4', 0), ('missing.mp4', 1), ('empty.mp4', 1), ('unreadable.mp4', 2), ('v1.mp4', 1)]
  storage.write_text(f'{url}/bad.csv', ''.join(f'{path} {label}\n' for path, label in rows))
  bad = [f'{url}/{name}' for name in ('missing.mp4', 'empty.mp4', 'unreadable.mp4')]
  before = dict(pipeline.skip_stats().bad_videos), pipeline.skip_stats().skipped
  with caplog.at_level(logging.WARNING):
    batches = eval_batches(eval_config(url, f'{url}/bad.csv', test_num_clips=1, max_failure_fraction=1.0))
  np.testing.assert_array_equal(np.concatenate([b['mask'] for b in batches])[:5], [1, 0, 0, 0, 1])
  assert pipeline.skip_stats().skipped - before[1] == 3
  for path in bad:
    assert pipeline.skip_stats().bad_videos[path] == before[0].get(path, 0) + 1
  reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Cannot decode video')]
  assert f'Cannot decode video {bad[0]}: missing file' in reasons
  assert f'Cannot decode video {bad[1]}: empty file (0 bytes)' in reasons
  assert any(m.startswith(f'Cannot decode video {bad[2]}: ') and 'Service Unavailable' in m for m in reasons)


def test_synthetic_dataset_written_to_a_bucket_feeds_the_loader(tmp_path, bucket):
  kwargs = dict(num_classes=2, videos_per_class=2, num_frames=8, height=32, width=32, seed=3)
  synthetic.write_dataset(str(tmp_path), **kwargs)
  url = f'{bucket}/synthetic'
  synthetic.write_dataset(url, **kwargs)
  assert storage.files_under(url) == storage.files_under(str(tmp_path))
  for rel in storage.files_under(url):  # x264 is deterministic: the same bytes as written locally.
    assert storage.read_bytes(f'{url}/{rel}') == (tmp_path / rel).read_bytes(), rel
  cfg = eval_config(url, f'{url}/train.csv', classes_file=f'{url}/classes.txt', num_classes=0, test_short_side=32,
                    crop_size=32, target_fps=10.0, test_num_clips=1)
  assert sources.num_classes_from_config(cfg) == 2
  skipped = pipeline.skip_stats().skipped
  batches = eval_batches(cfg, batch_size=2)
  labels = [int(line.split()[1]) for line in storage.read_text(f'{url}/train.csv').splitlines()]
  assert np.concatenate([b['mask'] for b in batches]).all() and len(labels) == 2
  assert np.concatenate([b['label'] for b in batches]).tolist() == labels
  assert batches[0]['video'].shape == (2, 4, 32, 32, 3) and pipeline.skip_stats().skipped == skipped


def test_scan_reports_a_path_the_store_cannot_answer_for_as_bad(bucket, monkeypatch):
  from mvit_jax.data import scan  # pylint: disable=g-import-not-at-top

  def failing_isdir(path):
    raise store_error()

  monkeypatch.setattr(storage, 'isdir', failing_isdir)
  assert scan.check_video(f'{bucket}/v.mp4') == (f'{bucket}/v.mp4', False, 'cannot fetch: Service Unavailable, 503')


def run(gcs_server, *args):
  """Runs `python *args` from the repository root against the emulator; returns (exit status, stdout + stderr)."""
  env = {**os.environ, **gcs_server.env, 'PYTHONPATH': testlib.REPO + os.pathsep + os.environ.get('PYTHONPATH', '')}
  proc = subprocess.run([sys.executable, *args], cwd=testlib.REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_scan_checks_a_manifest_in_a_bucket_and_writes_its_report_there(tmp_path, bucket, gcs_server):
  good, bad = testlib.write_torture_set(str(tmp_path / 'videos'))
  write_frame_folders(tmp_path / 'videos')
  url = upload(tmp_path / 'videos', f'{bucket}/videos')
  names = [os.path.basename(p) for p in [*good.values(), *bad.values()]] + ['missing.mp4', 'vid 0']
  storage.write_text(f'{url}/all.csv', ''.join(f'{name} 0\n' for name in names))
  code, out = run(gcs_server, '-m', 'mvit_jax.data.scan', '--manifest', f'{url}/all.csv', '--root', url,
                  '--report', f'{bucket}/report.tsv', '--workers', '2')
  assert code == 1, out
  bad_urls = {f'{url}/{os.path.basename(p)}' for p in bad.values()} | {f'{url}/missing.mp4'}
  assert {line[4:].split(': ')[0] for line in out.splitlines() if line.startswith('BAD ')} == bad_urls
  report = [line.split('\t') for line in storage.read_text(f'{bucket}/report.tsv').splitlines()]
  assert {p for p, status, _ in report if status == 'bad'} == bad_urls
  assert dict((p, detail) for p, status, detail in report if status == 'ok')[f'{url}/vid 0'] == '31 frames, 60x80'


@pytest.mark.slow
def test_synthetic_cli_and_preview_with_a_bucket(tmp_path, bucket, gcs_server):
  url = f'{bucket}/ds'
  code, out = run(gcs_server, '-m', 'mvit_jax.data.synthetic', '--out', url, '--num-classes', '2',
                  '--videos-per-class', '3', '--num_frames', '16')
  assert code == 0, out
  config = tmp_path / 'cfg.py'
  config.write_text('from mvit_jax.data import config\n'
                    'def get_config():\n'
                    '  c = config.default_data_config()\n'
                    '  c.num_frames, c.sampling_rate, c.target_fps = 4, 2, 10.0\n'
                    '  c.crop_size, c.train_short_side, c.random_erasing_prob = 32, 48, 0.0\n'
                    '  return c\n')
  code, out = run(gcs_server, '-m', 'mvit_jax.data.preview', '--manifest', f'{url}/train.csv', '--root', url,
                  '--out', f'{bucket}/grid.png', '--batch_size', '2', '--min_cell', '64', '--config', str(config),
                  f'--config.classes_file={url}/classes.txt')
  assert code == 0, out
  assert 'skipped 0' in out and f'wrote {bucket}/grid.png' in out
  with storage.open_file(f'{bucket}/grid.png', 'rb') as f, Image.open(f) as image:
    assert image.format == 'PNG' and image.size == (4 * (64 + 2), 2 * (64 + 14 + 2))
