"""DALI loader (data.loader='dali') on DALI's CPU decoder with VP9 videos: the grain path's clips (frame indices,
crops, flips, labels), exact resume, bad videos skipped and counted, the config check."""
import json

import numpy as np
import pytest

pytest.importorskip('nvidia.dali', reason="DALI is not installed: pip install 'mvit_jax[dali]'")

# pylint: disable=wrong-import-position
from mvit_jax.data import config as config_lib
from mvit_jax.data import dali_loader
from mvit_jax.data import pipeline
from mvit_jax.data import synthetic
from mvit_jax.system import storage
from mvit_jax.train import config as train_config
from tests import testlib

HEIGHT, WIDTH = 120, 160  # code_frame's stripes need a multiple of 12 lines.
NUM_VIDEOS, NUM_CLASSES = 5, 3


def textured_frame(code: int) -> np.ndarray:
  """code_frame's stripes at half contrast over a left-to-right ramp (so flips and crops show), in grey: colour
  edges would measure the decoders' chroma upsampling (DALI interpolates, decode.py takes the nearest sample), up
  to 30 levels next to a sharp colour edge."""
  ramp = np.linspace(0, 127, WIDTH).astype(np.uint8)[None, :, None]
  return testlib.code_frame(code, HEIGHT, WIDTH) // 2 + ramp


def write_vp9(path, num_frames: int, video_id: int, **kwargs) -> str:
  synthetic.write_video(str(path), (textured_frame(video_id << 8 | i) for i in range(num_frames)), codec='libvpx-vp9',
                        **kwargs)
  return str(path)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('dali')
  for v in range(NUM_VIDEOS):
    write_vp9(d / f'v{v}.mp4', 40 + 8 * v, v)
  testlib.write_manifest(str(d / 'train.csv'), [(f'v{v}.mp4', v % NUM_CLASSES) for v in range(NUM_VIDEOS)])
  return d


def make_config(data_dir, **overrides):
  """The Kinetics recipe without RandAugment, scaled to the small frames, on DALI's CPU backend."""
  cfg = config_lib.default_data_config()
  cfg.root, cfg.train_manifest, cfg.num_classes = str(data_dir), str(data_dir / 'train.csv'), NUM_CLASSES
  cfg.num_frames, cfg.sampling_rate = 8, 2
  cfg.random_resized_crop, cfg.train_jitter_scales, cfg.crop_size = False, (100, 150), 96
  cfg.randaugment, cfg.loader, cfg.dali_device, cfg.num_workers = False, 'dali', 'cpu', 0
  cfg.update(overrides)
  return cfg


def iterators(cfg, seed=0, batch=8):
  kwargs = dict(num_classes=NUM_CLASSES, global_batch_size=batch, seed=seed, process_index=0, process_count=1)
  return pipeline.make_train_iterator(cfg, **kwargs), dali_loader.make_train_iterator(cfg, **kwargs)


def test_same_frame_indices_as_grain(data_dir):
  # Crops of whole frame rows (jitter to the native short side, crop of its height) keep the stripes readable.
  cfg = make_config(data_dir, train_jitter_scales=(HEIGHT, HEIGHT), crop_size=HEIGHT, random_flip=False)
  grain_it, dali_it = iterators(cfg, seed=1)
  for _ in range(4):  # Two epochs of 5 videos in batches of 4 videos x 2 copies.
    want, got = next(grain_it), next(dali_it)
    np.testing.assert_array_equal(got['label'], want['label'])
    codes = testlib.read_codes(got['video'].reshape(-1, HEIGHT, HEIGHT, 3)).reshape(8, cfg.num_frames)
    np.testing.assert_array_equal(codes, testlib.read_codes(want['video'].reshape(-1, HEIGHT, HEIGHT, 3)).reshape(
        8, cfg.num_frames))
    frames = codes & 0xFF
    assert (np.diff(frames, axis=1) >= 0).all() and len(set((codes >> 8).ravel().tolist())) > 1
  grain_it.close()


@pytest.mark.parametrize('random_resized_crop', [False, True])
def test_pixels_match_grain_path(data_dir, random_resized_crop):
  """Same crop windows and flips; pixels within 2 levels, 0.15 on average (measured): the same FFmpeg VP9 decoder,
  whose YUV -> RGB conversions differ by up to 1 level (mean 0.05), and one bilinear resize of the window from the
  same sampling positions, within 1 level (OpenCV's 11-bit fixed-point weights, DALI's float)."""
  cfg = make_config(data_dir, random_resized_crop=random_resized_crop)
  grain_it, dali_it = iterators(cfg, seed=2)
  flipped = []
  for _ in range(3):
    want, got = next(grain_it), next(dali_it)
    assert got['video'].shape == want['video'].shape == (8, cfg.num_frames, 96, 96, 3)
    assert got['video'].dtype == np.uint8
    np.testing.assert_array_equal(got['label'], want['label'])
    error = np.abs(got['video'].astype(int) - want['video'])
    assert error.max() <= 2 and error.mean() < 0.25
    flipped += (want['video'][:, 0, 0, 0, 1] > want['video'][:, 0, 0, -1, 1]).tolist()  # Ramp reversed.
  assert any(flipped) and not all(flipped)
  grain_it.close()


def test_resume_gives_the_same_next_batch(data_dir):
  cfg = make_config(data_dir)
  _, it = iterators(cfg, seed=3)
  for _ in range(3):  # Past an epoch; DALI has prefetched beyond the state.
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  want = [next(it) for _ in range(2)]
  _, resumed = iterators(cfg, seed=3)
  resumed.set_state(state)
  it.set_state(state)
  for batch in want:
    for other in (next(resumed), next(it)):
      np.testing.assert_array_equal(other['video'], batch['video'])
      np.testing.assert_array_equal(other['label'], batch['label'])


def test_bad_videos_are_skipped_and_counted(data_dir, tmp_path):
  good = [write_vp9(tmp_path / f'good{v}.mp4', 30, v) for v in range(2)]
  data = (write_vp9(tmp_path / 'long.mp4', 200, 3, faststart=True) and (tmp_path / 'long.mp4').read_bytes())
  (tmp_path / 'zero.mp4').write_bytes(b'')
  (tmp_path / 'text.mp4').write_text('not a video\n' * 20)
  bad = [str(tmp_path / name) for name in ('zero.mp4', 'text.mp4', 'h264.mp4', 'missing.mp4')]
  testlib.write_index_video(bad[2], 30, video_id=2)  # H.264: only DALI's GPU backend decodes it.
  manifest = testlib.write_manifest(str(tmp_path / 'all.csv'), [(p, 0) for p in good + bad])
  cfg = make_config(data_dir, train_manifest=manifest, max_failure_fraction=1.0,
                    train_jitter_scales=(HEIGHT, HEIGHT), crop_size=HEIGHT)
  before = pipeline.skip_stats().skipped
  _, it = iterators(cfg, seed=4)
  for _ in range(3):  # Two epochs of the 6 videos, 4 per batch.
    batch = next(it)
    ids = testlib.read_codes(batch['video'].reshape(-1, HEIGHT, HEIGHT, 3)) >> 8
    assert set(ids.tolist()) <= {0, 1}
  assert set(bad) <= set(pipeline.skip_stats().bad_videos)
  assert pipeline.skip_stats().skipped - before >= 2 * len(bad)

  only_bad = testlib.write_manifest(str(tmp_path / 'bad.csv'), [(p, 0) for p in bad])
  _, it = iterators(make_config(data_dir, train_manifest=only_bad, max_replacement_attempts=2))
  with pytest.raises(pipeline.TooManyBadVideosError, match='3 videos in a row failed'):
    next(it)

  truncated = dali_loader.read_header(data[:len(data) // 3], dali_loader.DECODABLE['cpu'])
  assert truncated.num_frames == 200 and truncated.num_packets < 100
  with pytest.raises(dali_loader.decode.DecodeError, match='truncated'):
    dali_loader.in_stream(np.array([150]), truncated)


@pytest.mark.slow  # Starts the GCS emulator (once per test process).
def test_videos_in_a_bucket_give_the_batches_of_local_files(data_dir, bucket):
  storage.upload_tree(str(data_dir), f'{bucket}/dali')
  local = make_config(data_dir)
  remote = make_config(data_dir, root=f'{bucket}/dali', train_manifest=f'{bucket}/dali/train.csv')
  (_, want), (_, got) = iterators(local, seed=5), iterators(remote, seed=5)
  for _ in range(2):
    np.testing.assert_array_equal(next(got)['video'], next(want)['video'])


@pytest.mark.parametrize('overrides, message', [
    (dict(loader='dlai'), "loader 'dlai' is not one of"),
    (dict(loader='dali', randaugment=True), 'cannot do RandAugment'),
    (dict(loader='dali', randaugment=False, dataset_kind='frames'), "decodes video files"),
    (dict(loader='dali', randaugment=False, dali_device='gpu'), "dali_device must be 'mixed' or 'cpu'"),
])
def test_config_check(overrides, message):
  config = train_config.base_config()
  config.data.update(overrides)
  with pytest.raises(train_config.ConfigError, match=message):
    train_config.validate(config)
