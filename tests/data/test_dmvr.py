"""DMVR / Scenic TFRecords written by TensorFlow itself: same clips as the video path, exact resume, bad records
skipped and counted, gs:// globs, config wiring."""
import json
import logging
import os
import shutil

import numpy as np
import pytest

from mvit_jax.data import config as config_lib
from mvit_jax.data import decode
from mvit_jax.data import dmvr
from mvit_jax.data import pipeline
from mvit_jax.data import sampling
from mvit_jax.data import sources
from mvit_jax.data import synthetic
from mvit_jax.data import tfrecord
from mvit_jax.system import storage
from mvit_jax.train import config as train_config
from mvit_jax.system.errors import InputError
from tests import testlib

NUM_VIDEOS, NUM_CLASSES, VIDEO_FRAMES, HEIGHT, WIDTH, FPS = 6, 3, 40, 96, 128, 30.0
IMAGE_KEY, LABEL_KEY = 'image/encoded', 'clip/label/index'


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float('inf') if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """NUM_VIDEOS motion videos (mp4 + manifest) and the same videos' decoded frames in two TFRecord files
  (records in manifest order)."""
  d = tmp_path_factory.mktemp('dmvr')
  rng = np.random.default_rng(0)
  entries, videos = [], []
  for v in range(NUM_VIDEOS):
    frames = synthetic.motion_frames(v % NUM_CLASSES, rng, num_frames=VIDEO_FRAMES, height=HEIGHT, width=WIDTH,
                                     speed=2.0)
    synthetic.write_video_file(str(d / f'v{v}.mp4'), frames, fps=FPS, gop=8)
    decoded = decode.decode_video(str(d / f'v{v}.mp4'), lambda n, fps: np.arange(n)).frames
    assert len(decoded) == VIDEO_FRAMES
    entries.append(f'v{v}.mp4 {v % NUM_CLASSES}\n')
    videos.append((decoded, [v % NUM_CLASSES]))
  (d / 'train.csv').write_text(''.join(entries))
  (d / 'val.csv').write_text(''.join(entries))
  half = NUM_VIDEOS // 2
  testlib.write_tfrecords(str(d / 'train-00000-of-00002.tfrecord'), videos[:half])
  testlib.write_tfrecords(str(d / 'train-00001-of-00002.tfrecord'), videos[half:])
  return d


def make_config(data_dir, kind='dmvr', **overrides):
  """The video path (kind 'manifest') or the TFRecords of the same videos; augmentations without RandAugment."""
  cfg = config_lib.default_data_config()
  cfg.dataset_kind, cfg.root, cfg.num_classes = kind, str(data_dir), NUM_CLASSES
  cfg.train_manifest, cfg.eval_manifest = str(data_dir / 'train.csv'), str(data_dir / 'val.csv')
  cfg.train_shards = cfg.eval_shards = str(data_dir / 'train-*.tfrecord')
  cfg.frames_fps = FPS
  cfg.num_frames, cfg.sampling_rate, cfg.target_fps = 4, 2, 30.0
  cfg.train_short_side, cfg.test_short_side, cfg.crop_size = 0, HEIGHT, 64
  cfg.random_resized_crop, cfg.train_jitter_scales = False, (80, 112)
  cfg.randaugment, cfg.random_erasing_prob = False, 0.0
  cfg.test_num_clips, cfg.test_num_crops = 2, 3
  cfg.num_workers, cfg.read_threads = 0, 1
  cfg.update(overrides)
  return cfg


def train_batches(cfg, n, seed=0, state=None):
  it = pipeline.make_train_iterator(cfg, num_classes=NUM_CLASSES, global_batch_size=4, seed=seed, process_index=0,
                                    process_count=1)
  if state is not None:
    it.set_state(state)
  batches = [next(it) for _ in range(n)]
  it.close()
  return batches


def test_index_of_tf_written_files(data_dir):
  source = dmvr.DmvrSource(str(data_dir / 'train-*.tfrecord'), fps=FPS)
  assert len(source) == NUM_VIDEOS and not source.remote
  assert [source.label(i) for i in range(NUM_VIDEOS)] == [v % NUM_CLASSES for v in range(NUM_VIDEOS)]
  np.testing.assert_array_equal(source.num_frames, VIDEO_FRAMES)
  assert source.describe(3) == str(data_dir / 'train-00001-of-00002.tfrecord') + '@0'
  assert source.num_classes() == NUM_CLASSES


def test_same_clip_as_the_video_path_up_to_jpeg_loss(data_dir):
  cfg = make_config(data_dir)
  videos = sources.make_source(make_config(data_dir, 'manifest'), 'train', NUM_CLASSES)
  records = sources.make_source(cfg, 'train', NUM_CLASSES)
  assert isinstance(records, dmvr.DmvrSource)
  for i in range(NUM_VIDEOS):
    want, got = (source.load(i, lambda n, fps: sampling.train_clip_indices(n, fps, cfg, np.random.default_rng(i)))
                 for source in (videos, records))
    np.testing.assert_array_equal(want.indices, got.indices)
    assert (got.num_video_frames, got.fps) == (want.num_video_frames, want.fps)
    assert psnr(want.frames, got.frames) >= 35
    assert records.label(i) == videos.label(i)
  # Whole loaders, same seed: same videos, labels, clips and crop boxes (a crop box one pixel off fails the PSNR
  # bound, as the other seed shows).
  want, got, other = (train_batches(make_config(data_dir, kind), 3, seed)
                      for kind, seed in (('manifest', 0), ('dmvr', 0), ('dmvr', 1)))
  for w, g, o in zip(want, got, other):
    np.testing.assert_array_equal(w['label'], g['label'])
    assert min(psnr(a, b) for a, b in zip(w['video'], g['video'])) >= 35
    assert min(psnr(a, b) for a, b in zip(w['video'], o['video'])) < 30


def test_eval_views_match_the_video_path(data_dir):
  views = []
  for kind in ('manifest', 'dmvr'):
    it = pipeline.make_eval_iterator(make_config(data_dir, kind, crop_size=HEIGHT), num_classes=NUM_CLASSES,
                                     global_batch_size=6, process_index=0, process_count=1)
    views.append(list(it))
    it.close()
  assert len(views[0]) == len(views[1]) == NUM_VIDEOS
  for want, got in zip(*views):
    for key in ('label', 'video_index', 'view_index', 'mask'):
      np.testing.assert_array_equal(want[key], got[key])
    assert min(psnr(a, b) for a, b in zip(want['video'], got['video'])) >= 35


@pytest.mark.parametrize('num_workers', [0, pytest.param(2, marks=pytest.mark.slow)])
def test_restored_iterator_yields_the_uninterrupted_batches(data_dir, num_workers):
  cfg = make_config(data_dir, num_workers=num_workers, randaugment=True, random_erasing_prob=0.5)
  it = pipeline.make_train_iterator(cfg, num_classes=NUM_CLASSES, global_batch_size=4, seed=1, process_index=0,
                                    process_count=1)
  [next(it) for _ in range(2)]
  state = json.loads(json.dumps(it.get_state()))  # What grain's orbax handler writes.
  expected = [next(it) for _ in range(3)]          # Crosses the epoch boundary (3 batches per epoch).
  it.close()
  for want, got in zip(expected, train_batches(cfg, 3, seed=1, state=state)):
    np.testing.assert_array_equal(want['video'], got['video'])
    np.testing.assert_array_equal(want['label'], got['label'])


def _record_offsets(path: str) -> list[int]:
  return [record.offset for record in tfrecord.scan(path)]


def test_bad_records_are_skipped_and_counted(data_dir, tmp_path):
  first, second = (str(tmp_path / f'train-{k}.tfrecord') for k in range(2))
  shutil.copy(data_dir / 'train-00000-of-00002.tfrecord', first)
  shutil.copy(data_dir / 'train-00001-of-00002.tfrecord', second)
  offsets = _record_offsets(first)
  with open(first, 'r+b') as f:  # A flipped byte in the JPEG data of record 1.
    f.seek(offsets[1] + 500)
    byte = f.read(1)
    f.seek(offsets[1] + 500)
    f.write(bytes([byte[0] ^ 0xFF]))
  last = _record_offsets(second)[-1]
  with open(second, 'r+b') as f:  # The last record cut short.
    f.truncate(last + 1000)
  cfg = make_config(data_dir, train_shards=str(tmp_path / 'train-*.tfrecord'),
                    eval_shards=str(tmp_path / 'train-*.tfrecord'), max_failure_fraction=0.5)
  source = sources.make_source(cfg, 'eval', NUM_CLASSES)
  assert len(source) == NUM_VIDEOS
  for i, reason in ((1, 'crc mismatch'), (5, 'truncated')):
    with pytest.raises(decode.DecodeError, match=reason):
      source.load(i, lambda n, fps: np.arange(4))
  before = pipeline.skip_stats().skipped
  it = pipeline.make_eval_iterator(cfg, num_classes=NUM_CLASSES, global_batch_size=6, process_index=0,
                                   process_count=1)
  masks = np.stack([batch['mask'] for batch in it])  # (videos, views): a video's views fill one batch.
  it.close()
  np.testing.assert_array_equal(masks.all(axis=1), [i not in (1, 5) for i in range(NUM_VIDEOS)])
  assert pipeline.skip_stats().skipped - before == 2 * 6  # Every view of each bad video.
  assert {f'{first}@{offsets[1]}', f'{second}@{last}'} <= set(pipeline.skip_stats().bad_videos)


def test_broken_framing_keeps_the_records_before_it(data_dir, tmp_path, caplog):
  path = str(tmp_path / 'a.tfrecord')
  shutil.copy(data_dir / 'train-00000-of-00002.tfrecord', path)
  offsets = _record_offsets(path)
  with open(path, 'r+b') as f:  # A flipped byte in record 2's length.
    f.seek(offsets[2])
    byte = f.read(1)
    f.seek(offsets[2])
    f.write(bytes([byte[0] ^ 0x01]))
  (tmp_path / 'b.tfrecord').write_bytes(b'not a TFRecord file at all')
  with caplog.at_level(logging.WARNING):
    source = dmvr.DmvrSource(str(tmp_path / '*.tfrecord'), fps=FPS)
  assert len(source) == 2 and [source.label(i) for i in range(2)] == [0, 1]
  assert f'{path}: byte {offsets[2]}: record header crc mismatch' in caplog.text
  assert 'b.tfrecord: byte 0: record header crc mismatch' in caplog.text
  os.remove(path)
  with pytest.raises(dmvr.DmvrError, match='no records in the 1 files'):
    dmvr.DmvrSource(str(tmp_path / '*.tfrecord'), fps=FPS)
  with pytest.raises(dmvr.DmvrError, match='no TFRecord files match'):
    dmvr.DmvrSource(str(tmp_path / '*.missing'), fps=FPS)


def test_keys_multi_label_and_label_checks(tmp_path):
  frames = np.zeros((3, 16, 16, 3), np.uint8)
  path = str(tmp_path / 'm.tfrecord')
  testlib.write_tfrecords(path, [(frames, [4, 1]), (frames, [2])], image_key='rgb', label_key='labels')
  cfg = config_lib.default_data_config()
  cfg.dataset_kind, cfg.train_shards, cfg.dmvr_image_key, cfg.dmvr_label_key = 'dmvr', path, 'rgb', 'labels'
  with pytest.raises(dmvr.DmvrError, match=r'm.tfrecord@0 has 2 labels in .labels.: set data.multi_label'):
    sources.make_source(cfg, 'train', 0)
  cfg.multi_label = True
  assert sources.num_classes_from_config(cfg) == 5
  source = sources.make_source(cfg, 'train', 5)
  assert [source.label(0), source.label(1)] == [(4, 1), (2,)]
  assert source.load(1, lambda n, fps: np.array([2, 0])).frames.shape == (2, 16, 16, 3)
  with pytest.raises(dmvr.DmvrError, match=r'm.tfrecord@0: label 4 outside \[0, 3\)'):
    sources.make_source(cfg, 'train', 3)
  cfg.dmvr_image_key = 'image/encoded'  # No such feature list: every record is bad, the loader skips them.
  with pytest.raises(decode.DecodeError, match="no frames in feature list 'image/encoded'"):
    sources.make_source(cfg, 'train', 0).load(0, lambda n, fps: np.arange(1))


def test_short_side_resize_only_when_it_differs(data_dir):
  source = dmvr.DmvrSource(str(data_dir / 'train-*.tfrecord'), fps=FPS)
  native = source.load(0, lambda n, fps: np.array([5]), short_side=HEIGHT).frames
  np.testing.assert_array_equal(native, source.load(0, lambda n, fps: np.array([5])).frames)
  assert source.load(0, lambda n, fps: np.array([5]), short_side=48).frames.shape == (1, 48, 64, 3)


def test_config_check_names_the_key(data_dir):
  config = train_config.base_config()
  config.data = make_config(data_dir)
  config.eval_every_steps = -1
  train_config._check_data_paths(config)  # pylint: disable=protected-access
  config.data.train_shards = str(data_dir / 'nothing-*.tfrecord')
  with pytest.raises(InputError, match="config.data.train_shards: no files match '.*nothing-"):
    train_config._check_data_paths(config)  # pylint: disable=protected-access
  config.data.train_shards = ''
  with pytest.raises(InputError, match="config.data.train_shards is empty"):
    train_config._check_data_paths(config)  # pylint: disable=protected-access


def test_glob_in_a_bucket(data_dir, bucket):
  for name in ('train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord'):
    storage.copy_file(str(data_dir / name), f'{bucket}/k/{name}')
  data = (data_dir / name).read_bytes()
  assert storage.read_range(f'{bucket}/k/{name}', len(data) - 4, 10) == data[-4:]
  assert storage.read_range(f'{bucket}/k/{name}', len(data), 10) == b''  # The store's 416: the end of the file.
  local = dmvr.DmvrSource(str(data_dir / 'train-*.tfrecord'), fps=FPS)
  remote = dmvr.DmvrSource(f'{bucket}/k/train-*.tfrecord', fps=FPS)
  assert remote.remote and len(remote) == NUM_VIDEOS
  assert remote.describe(3) == f'{bucket}/k/train-00001-of-00002.tfrecord@0'
  for i in range(NUM_VIDEOS):
    assert remote.label(i) == local.label(i)
    np.testing.assert_array_equal(remote.load(i, lambda n, fps: np.array([0, 39])).frames,
                                  local.load(i, lambda n, fps: np.array([0, 39])).frames)
