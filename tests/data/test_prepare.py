"""Prepared shards: the same clips as the video files up to JPEG loss, bad videos left out, exact resume of prepare
and of training, gs://."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mvit_jax.data import config as config_lib
from mvit_jax.data import decode
from mvit_jax.data import pipeline
from mvit_jax.data import prepare
from mvit_jax.data import prepared
from mvit_jax.data import sampling
from mvit_jax.data import sources
from mvit_jax.data import synthetic
from mvit_jax.system import storage
from tests import testlib

NUM_CLASSES, HEIGHT, WIDTH, FRAMES, FPS = 3, 64, 96, 40, 10.0


def write_videos(folder: str, num_videos: int, num_frames: int = FRAMES) -> str:
  """Motion videos v{i}.mp4 of class i % NUM_CLASSES and the manifest all.csv in `folder`; returns the manifest."""
  rng = np.random.default_rng(0)
  entries = []
  for i in range(num_videos):
    frames = synthetic.motion_frames(i % NUM_CLASSES, rng, num_frames=num_frames, height=HEIGHT, width=WIDTH,
                                     speed=2.0)
    synthetic.write_video(os.path.join(folder, f'v{i}.mp4'), frames, fps=FPS, gop=8)
    entries.append((f'v{i}.mp4', i % NUM_CLASSES))
  return testlib.write_manifest(os.path.join(folder, 'all.csv'), entries)


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  folder = tmp_path_factory.mktemp('prepare')
  write_videos(str(folder), 6)
  return folder


@pytest.fixture(scope='module')
def shards(videos):
  out = str(videos / 'prepared')
  prepare.prepare(str(videos / 'all.csv'), str(videos), out, videos_per_shard=4, workers=1)
  return out


def make_config(videos, shards, kind, **overrides):
  cfg = config_lib.default_data_config()
  cfg.dataset_kind, cfg.root, cfg.num_classes = kind, str(videos), NUM_CLASSES
  cfg.train_manifest = cfg.eval_manifest = str(videos / 'all.csv')
  cfg.train_shards = cfg.eval_shards = shards
  cfg.num_frames, cfg.sampling_rate, cfg.target_fps = 4, 2, FPS
  cfg.train_short_side, cfg.test_short_side, cfg.crop_size = 0, HEIGHT, 56
  cfg.random_resized_crop, cfg.train_jitter_scales = False, (HEIGHT, 80)
  cfg.randaugment, cfg.random_erasing_prob = False, 0.0
  cfg.test_num_clips, cfg.test_num_crops = 2, 3
  cfg.num_workers, cfg.read_threads = 0, 1
  cfg.update(overrides)
  return cfg


def psnr(a, b) -> float:
  mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
  return float(10 * np.log10(255.0 ** 2 / mse)) if mse else float('inf')


def test_index_lists_every_video_in_manifest_order(videos, shards):
  index = prepared.read_index(shards)
  assert index['shards'] == ['shard-00000-of-00002.array_record', 'shard-00001-of-00002.array_record']
  assert index['videos']['path'] == [str(videos / f'v{i}.mp4') for i in range(6)]
  assert index['videos']['shard'] == [0, 0, 0, 0, 1, 1] and index['videos']['position'] == [0, 1, 2, 3, 0, 1]
  assert index['videos']['label'] == [i % NUM_CLASSES for i in range(6)]
  assert index['videos']['num_frames'] == [FRAMES] * 6 and index['videos']['fps'] == [FPS] * 6
  assert index['bad_videos'] == [] and index['settings']['short_side'] == 320
  source = prepared.PreparedSource(shards)
  assert len(source) == 6 and source.label(4) == 1 and source.describe(4) == str(videos / 'v4.mp4')
  assert not source.remote


def test_prepared_clip_equals_the_video_clip_up_to_jpeg_loss(videos, shards):
  cfg = make_config(videos, shards, 'manifest')
  video_source = sources.make_source(cfg, 'train', NUM_CLASSES)
  shard_source = sources.make_source(make_config(videos, shards, 'prepared'), 'train', NUM_CLASSES)
  for i in range(len(video_source)):
    index_fn = lambda n, fps, i=i: sampling.train_clip_indices(n, fps, cfg, np.random.default_rng(i))
    want, got = video_source.load(i, index_fn, 0), shard_source.load(i, index_fn, 0)
    np.testing.assert_array_equal(got.indices, want.indices)
    assert (got.fps, got.num_video_frames, got.frames.shape) == (want.fps, want.num_video_frames, want.frames.shape)
    assert psnr(got.frames, want.frames) >= 35
    assert shard_source.label(i) == video_source.label(i)


def test_train_and_eval_batches_equal_the_video_path_up_to_jpeg_loss(videos, shards):
  """Same seed: same videos, labels, frames and crop boxes (a crop one pixel off falls below 35 dB on most clips)."""
  batches = {}
  for kind in ('manifest', 'prepared'):
    cfg = make_config(videos, shards, kind)
    train = pipeline.make_train_iterator(cfg, num_classes=NUM_CLASSES, global_batch_size=4, seed=3,
                                         process_index=0, process_count=1)
    evaluation = pipeline.make_eval_iterator(cfg, num_classes=NUM_CLASSES, global_batch_size=12, process_index=0,
                                             process_count=1)
    batches[kind] = [next(train), next(train), next(evaluation)]
    train.close()
    evaluation.close()
  for want, got in zip(batches['manifest'], batches['prepared']):
    assert set(want) == set(got)
    for key in set(want) - {'video'}:
      np.testing.assert_array_equal(got[key], want[key])
    for clip_want, clip_got in zip(want['video'], got['video']):
      assert psnr(clip_got, clip_want) >= 35


def test_a_smaller_short_side_is_decoded_from_the_stored_frames(videos, shards):
  source = prepared.PreparedSource(shards)
  clip = source.load(0, lambda n, fps: np.array([0, 5]), 32)
  assert clip.frames.shape == (2, 32, 48, 3)
  full = source.load(0, lambda n, fps: np.array([0, 5]), 0).frames
  assert psnr(clip.frames, full[:, ::2, ::2]) >= 25  # The same picture at half size.


def test_short_side_and_fps_settings(videos, tmp_path):
  prepare.prepare(str(videos / 'all.csv'), str(videos), str(tmp_path), short_side=32, fps=4.0, videos_per_shard=8,
                  workers=1)
  index = prepared.read_index(str(tmp_path))
  # 40 frames at 10 fps = 4 s: 16 frames at 4 fps, stored frame j is video frame floor(j * 2.5).
  assert index['videos']['num_frames'] == [16] * 6 and index['videos']['fps'] == [4.0] * 6
  assert index['videos']['height'] == [32] * 6 and index['videos']['width'] == [48] * 6
  video = sources.FileSource(sources.read_manifest(str(videos / 'all.csv'), str(videos)))
  got = prepared.PreparedSource(str(tmp_path)).load(1, lambda n, fps: np.arange(n), 0)
  want = video.load(1, lambda n, fps: np.floor(np.arange(16) * 2.5).astype(int), 32)
  assert got.fps == 4.0 and psnr(got.frames, want.frames) >= 35
  native = tmp_path / 'native'
  prepare.prepare(str(videos / 'all.csv'), str(videos), str(native), short_side=0, videos_per_shard=8, workers=1)
  assert prepared.read_index(str(native))['videos']['height'] == [HEIGHT] * 6  # Never upscaled, 0 native.


def test_long_videos_are_encoded_window_by_window(videos, tmp_path, monkeypatch):
  monkeypatch.setattr(prepare, 'WINDOW_FRAMES', 16)
  calls = []
  decode_video = decode.decode_video
  monkeypatch.setattr(decode, 'decode_video', lambda *a, **k: calls.append(1) or decode_video(*a, **k))
  prepare.prepare(str(videos / 'all.csv'), str(videos), str(tmp_path), videos_per_shard=8, workers=1)
  assert len(calls) == 6 * (1 + 3)  # A probe of frame 0, then 16 + 16 + 8 frames.
  got = prepared.PreparedSource(str(tmp_path)).load(5, lambda n, fps: np.arange(n), 0).frames
  want = prepared.PreparedSource(str(videos / 'prepared')).load(5, lambda n, fps: np.arange(n), 0).frames
  np.testing.assert_array_equal(got, want)


def test_multi_label_videos_keep_their_label_lists(videos, tmp_path):
  manifest = testlib.write_manifest(str(tmp_path / 'm.csv'), [('v0.mp4', '0,4'), ('v1.mp4', '2')])
  prepare.prepare(manifest, str(videos), str(tmp_path / 'out'), videos_per_shard=8, workers=1, multi_label=True)
  source = prepared.PreparedSource(str(tmp_path / 'out'))
  assert (source.label(0), source.label(1)) == ((0, 4), (2,)) and prepared.num_classes(str(tmp_path / 'out')) == 5
  with pytest.raises(ValueError, match=r'label 4 outside \[0, 4\)'):
    prepared.PreparedSource(str(tmp_path / 'out'), num_classes=4)


@pytest.fixture(scope='module')
def torture(tmp_path_factory):
  return testlib.write_torture_set(str(tmp_path_factory.mktemp('torture')))


def test_bad_videos_are_left_out_and_reported(videos, torture, tmp_path):
  good, bad = torture
  missing = str(tmp_path / 'missing.mp4')
  entries = [(str(videos / 'v0.mp4'), 0), (bad['zero'], 1), (bad['text'], 2), (missing, 0),
             (bad['truncated_faststart'], 1), (good['normal_with_audio'], 2)]
  manifest = testlib.write_manifest(str(tmp_path / 'm.csv'), entries)
  index = prepare.prepare(manifest, '', str(tmp_path / 'out'), videos_per_shard=2, workers=1)
  assert index['videos']['path'] == [str(videos / 'v0.mp4'), good['normal_with_audio']]
  assert index['videos']['label'] == [0, 2] and index['shards'] == ['shard-00000-of-00003.array_record',
                                                                      'shard-00002-of-00003.array_record']
  reasons = {video['path']: video['reason'] for video in index['bad_videos']}
  assert list(reasons) == [bad['zero'], bad['text'], missing, bad['truncated_faststart']]
  assert reasons[missing] == 'missing file' and 'empty file' in reasons[bad['zero']]
  assert all(reasons.values())
  assert len(prepared.PreparedSource(str(tmp_path / 'out'))) == 2


def test_an_unreadable_record_is_a_decode_error(shards, tmp_path):
  damaged = tmp_path / 'damaged'
  os.makedirs(damaged)
  for name in os.listdir(shards):
    data = open(os.path.join(shards, name), 'rb').read()
    if name == 'shard-00001-of-00002.array_record':
      data = data[:100] + bytes(len(data) // 2 - 100) + data[len(data) // 2:]  # Zeros over the first records.
    (damaged / name).write_bytes(data)
  source = prepared.PreparedSource(str(damaged))
  with pytest.raises(decode.DecodeError, match='shard-00001-of-00002'):
    source.load(4, lambda n, fps: np.array([0]), 0)
  assert source.load(0, lambda n, fps: np.array([0]), 0).frames.shape == (1, HEIGHT, WIDTH, 3)


@pytest.mark.parametrize('num_workers', [0, pytest.param(2, marks=pytest.mark.slow)])
def test_training_on_prepared_shards_resumes_bitwise(videos, shards, num_workers):
  cfg = make_config(videos, shards, 'prepared', randaugment=True, random_erasing_prob=0.5, num_workers=num_workers)
  kwargs = dict(num_classes=NUM_CLASSES, global_batch_size=4, seed=1, process_index=0, process_count=1)
  it = pipeline.make_train_iterator(cfg, **kwargs)
  [next(it) for _ in range(2)]  # pylint: disable=expression-not-assigned
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(3)]  # Crosses the epoch boundary (3 batches of 2 videos per epoch).
  it.close()
  resumed = pipeline.make_train_iterator(cfg, **kwargs)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got['video'], want['video'])
    np.testing.assert_array_equal(got['label'], want['label'])
  resumed.close()


def test_config_names_a_missing_or_unprepared_folder(videos, shards, tmp_path):
  from mvit_jax.train import config as train_config  # pylint: disable=g-import-not-at-top
  from mvit_jax.system.errors import InputError  # pylint: disable=g-import-not-at-top
  config = train_config.base_config()
  config.data.dataset_kind, config.data.train_shards, config.eval_every_steps = 'prepared', shards, -1
  train_config.check_paths(config, str(tmp_path / 'work'))
  config.data.train_shards = str(videos)
  with pytest.raises(InputError, match=r'config.data.train_shards: .* holds no index.json'):
    train_config.check_paths(config, str(tmp_path / 'work'))
  config.data.train_shards = ''
  with pytest.raises(InputError, match='config.data.train_shards is empty'):
    train_config.check_paths(config, str(tmp_path / 'work'))
  config.data.train_shards, config.data.num_classes = shards, 0
  assert sources.num_classes_from_config(config.data) == NUM_CLASSES


def test_prepare_and_read_in_a_bucket(videos, shards, bucket):
  for i in range(6):
    storage.copy_file(str(videos / f'v{i}.mp4'), f'{bucket}/videos/v{i}.mp4')
  storage.copy_file(str(videos / 'all.csv'), f'{bucket}/videos/all.csv')
  out = f'{bucket}/prepared'
  index = prepare.prepare(f'{bucket}/videos/all.csv', f'{bucket}/videos', out, videos_per_shard=4, workers=1)
  assert index['videos']['path'] == [f'{bucket}/videos/v{i}.mp4' for i in range(6)]
  assert storage.files_under(out) == sorted(os.listdir(shards))  # No temporary objects left.
  first_index = storage.read_bytes(f'{out}/index.json')
  prepare.prepare(f'{bucket}/videos/all.csv', f'{bucket}/videos', out, videos_per_shard=4, workers=1)
  assert storage.read_bytes(f'{out}/index.json') == first_index
  remote, local = prepared.PreparedSource(out), prepared.PreparedSource(shards)
  assert remote.remote
  for i in (0, 5):
    np.testing.assert_array_equal(remote.load(i, lambda n, fps: np.arange(n), 0).frames,
                                  local.load(i, lambda n, fps: np.arange(n), 0).frames)


def run_prepare(*args, **kwargs):
  return subprocess.Popen([sys.executable, '-m', 'mvit_jax.data.prepare', *args], cwd=testlib.REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_prepare_killed_and_rerun_writes_the_bytes_of_an_uninterrupted_run(tmp_path):
  manifest = write_videos(str(tmp_path), 6, num_frames=240)
  whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
  prepare.prepare(manifest, str(tmp_path), str(whole), videos_per_shard=1, workers=2)
  args = ['--manifest', manifest, '--root', str(tmp_path), '--out', str(resumed), '--videos_per_shard', '1',
          '--workers', '1']
  process = run_prepare(*args)
  first_done = resumed / prepared.done_name(0, 6)
  deadline = time.monotonic() + 120
  while not first_done.exists() and process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.005)
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  assert first_done.exists() and not (resumed / 'index.json').exists()  # Killed after a shard, before the end.
  rerun = run_prepare(*args)
  _, stderr = rerun.communicate(timeout=300)
  assert rerun.returncode == 0, stderr
  assert 'prepared 6 of 6 videos into 6 shards' in stderr
  assert sorted(os.listdir(resumed)) == sorted(os.listdir(whole))
  for name in os.listdir(whole):
    assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name


@pytest.mark.slow
def test_cli_exit_status_and_one_line_errors(torture, tmp_path):
  _, bad = torture
  manifest = testlib.write_manifest(str(tmp_path / 'bad.csv'), [(bad['zero'], 0), (bad['text'], 1)])
  process = run_prepare('--manifest', manifest, '--out', str(tmp_path / 'out'))
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 1
  assert stderr.splitlines()[-1] == f'prepared 0 of 2 videos into 0 shards in {tmp_path / "out"}; 2 bad'
  assert f'BAD {bad["zero"]}: empty file (0 bytes)' in stderr
  process = run_prepare('--manifest', manifest, '--out', str(tmp_path / 'out'), '--quality', '0')
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 2 and len(stderr.strip().splitlines()) == 1 and '--quality' in stderr
