"""PyAV decoding: the right frames, only as many as needed, by timestamp on VFR files, and clear errors."""
import fractions
import os

import av
import numpy as np
import pytest
from PIL import Image

from mvit_jax.data import decode
from mvit_jax.data import sampling
from mvit_jax.data import synthetic
from tests import testlib


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  d = tmp_path_factory.mktemp('decode')
  good, bad = testlib.write_torture_set(str(d))
  return {**good, **bad,
          'long': testlib.write_index_video(str(d / 'long.mp4'), 200, gop=16),
          'two_streams': testlib.write_two_video_streams(str(d / 'two.mp4'), 20)}


def indices_fn(indices):
  return lambda n, fps: np.asarray(indices)


def test_decodes_requested_frames_in_requested_order(videos):
  clip = decode.decode_video(videos['long'], indices_fn([150, 5, 6, 199, 199, 0]))
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [150, 5, 6, 199, 199, 0])
  assert clip.frames.shape == (6, testlib.HEIGHT, testlib.WIDTH, 3) and clip.frames.dtype == np.uint8
  assert (clip.num_video_frames, clip.fps) == (200, 30.0)


def test_seeks_to_keyframe_and_stops_after_last_frame(videos):
  # Keyframes every 16 frames: frames 150-155 need a seek to 144 (or the one before) and ~12-28 decodes, not 156.
  clip = decode.decode_video(videos['long'], indices_fn(np.arange(150, 156)))
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), np.arange(150, 156))
  assert clip.num_decoded <= 32


def test_frame_threading_gives_the_same_frames(videos):
  for indices in ([0, 1, 2], [150, 160, 199], [198, 199]):
    clip = decode.decode_video(videos['long'], indices_fn(indices), threads=2)
    np.testing.assert_array_equal(testlib.read_codes(clip.frames), indices)


def test_index_fn_sees_length_and_fps(videos):
  seen = []
  decode.decode_video(videos['long'], lambda n, fps: seen.append((n, fps)) or np.array([0]))
  assert seen == [(200, 30.0)]


def test_short_side_resize_while_decoding(videos):
  clip = decode.decode_video(videos['long'], indices_fn([10, 11]), short_side=30)
  assert clip.frames.shape == (2, 30, 40, 3)
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [10, 11])
  assert decode.resized_shape(60, 80, 30) == (30, 40)
  assert decode.resized_shape(80, 60, 30) == (40, 30)
  assert decode.resized_shape(256, 340, 0) == (256, 340)
  assert decode.resized_shape(240, 320, 256) == (256, 341)


def test_variable_frame_rate_is_sampled_by_timestamp(videos):
  # 10 frames over 1.0 s -> nominal fps 10 / 1.0333 s (the last frame lasts 1/30 s). Index k means time
  # k * 0.10333 s; it shows the last frame at or before (k + 0.5) * 0.10333 s. Frame times (ms):
  # 0 33 66 200 233 500 533 566 600 1000 -> thresholds 52 155 258 362 465 568 672 775 878 982 ms.
  clip = decode.decode_video(videos['vfr'], indices_fn(np.arange(10)))
  assert clip.fps == pytest.approx(10 / 1.03333, rel=1e-3)
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [1, 2, 4, 4, 4, 7, 8, 8, 8, 8])


@pytest.mark.parametrize('name,codec,preset', [
    ('clip.mkv', 'libx264', 'ultrafast'), ('clip.webm', 'libvpx-vp9', ''), ('clip.avi', 'libx264', 'ultrafast'),
    ('b_frames.avi', 'libx264', 'medium'), ('clip.h264', 'libx264', 'ultrafast')])
def test_other_containers(tmp_path, name, codec, preset):
  # mkv/webm: no frame count in the header (length from duration). AVI: timestamps start late, and with B-frames
  # come out of order, so frames are counted. Raw H.264: no duration at all, so the whole stream is decoded.
  path = str(tmp_path / name)
  synthetic.write_video(path, (testlib.code_frame(i) for i in range(40)), fps=30, codec=codec, preset=preset)
  clip = decode.decode_video(path, indices_fn([0, 17, 39, 17]))
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [0, 17, 39, 17])
  assert clip.num_video_frames == 40


def test_short_video_with_clamped_indices(videos):
  clip = decode.decode_video(videos['three_frames'], indices_fn([0, 2, 2, 2]))
  np.testing.assert_array_equal(testlib.read_codes(clip.frames) & 255, [0, 2, 2, 2])


def test_audio_and_second_video_stream_are_ignored(videos):
  clip = decode.decode_video(videos['normal_with_audio'], indices_fn([3, 40]))
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [2 << 8 | 3, 2 << 8 | 40])
  clip = decode.decode_video(videos['two_streams'], indices_fn([0, 7, 19]))
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [0, 7, 19])


@pytest.mark.parametrize('name,reason', [
    ('zero', 'empty file'), ('text', 'cannot open'), ('audio_only', 'no video stream'),
    ('truncated', 'cannot open'), ('truncated_faststart', 'truncated|while decoding'), ('missing', 'missing file')])
def test_bad_files_raise_decode_error_with_reason(videos, name, reason):
  path = videos.get(name, '/nonexistent/video.mp4')
  with pytest.raises(decode.DecodeError, match=reason):
    decode.decode_video(path, indices_fn(np.arange(150, 160)))


def test_container_is_closed_on_success_and_failure(videos, monkeypatch):
  opened = []
  real_open = av.open

  def recording_open(*args, **kwargs):
    container = real_open(*args, **kwargs)
    closes = []
    container_close = container.close

    class Proxy:
      def __getattr__(self, name):
        return getattr(container, name)

      def close(self):
        closes.append(1)
        container_close()
    opened.append(closes)
    return Proxy()

  monkeypatch.setattr(decode.av, 'open', recording_open)
  decode.decode_video(videos['long'], indices_fn([3]))
  with pytest.raises(decode.DecodeError):
    decode.decode_video(videos['audio_only'], indices_fn([0]))
  with pytest.raises(decode.DecodeError):
    decode.decode_video(videos['truncated_faststart'], indices_fn([150]))
  assert opened == [[1], [1], [1]]


def test_probe_flags_truncation_that_first_frame_misses(videos):
  decode.probe_video(videos['long'])
  with pytest.raises(decode.DecodeError):
    decode.probe_video(videos['truncated_faststart'])


def test_frame_folder_reads_only_sampled_frames(tmp_path):
  folder = tmp_path / 'vid'
  folder.mkdir()
  for i in range(12):
    Image.fromarray(testlib.code_frame(i)).save(folder / f'{i:05d}.jpg', quality=95)
  clip = decode.decode_frame_folder(str(folder), indices_fn([11, 0, 5, 5]), fps=30.0)
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [11, 0, 5, 5])
  assert clip.num_decoded == 3 and clip.num_video_frames == 12
  clip = decode.decode_frame_folder(str(folder), indices_fn([1]), fps=30.0, short_side=30)
  assert clip.frames.shape == (1, 30, 40, 3)
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [1])
  with pytest.raises(decode.DecodeError, match='no frames'):
    decode.decode_frame_folder(str(tmp_path), indices_fn([0]), fps=30.0)
  (folder / '00003.jpg').write_bytes(b'not a jpeg')
  with pytest.raises(decode.DecodeError, match='00003.jpg'):
    decode.decode_frame_folder(str(folder), indices_fn([3]), fps=30.0)
  assert os.path.exists(folder / '00004.jpg')


def _bt601_rgb(yuv420: np.ndarray) -> np.ndarray:
  """The BT.601 limited-range formula in float64 with nearest chroma: (H*3/2, W) I420 -> (H, W, 3)."""
  h, w = yuv420.shape[0] * 2 // 3, yuv420.shape[1]
  y = (yuv420[:h].astype(np.float64) - 16) * 255 / 219
  u, v = ((yuv420[h + i * h // 4:h + (i + 1) * h // 4].reshape(h // 2, w // 2).astype(np.float64) - 128) * 255 / 224
          for i in (0, 1))
  u, v = (np.repeat(np.repeat(c, 2, 0), 2, 1) for c in (u, v))
  rgb = np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u], -1)
  return np.clip(np.round(rgb), 0, 255)


@pytest.mark.parametrize('colorspace,fast', [(None, True), ('ITU709', False)])
def test_rgb_conversion_is_bt601_and_honours_other_colour_spaces(colorspace, fast):
  rng = np.random.default_rng(0)
  image = np.repeat(np.repeat(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), 4, 0), 4, 1)  # (48, 64, 3)
  frame = av.VideoFrame.from_ndarray(image, format='rgb24').reformat(format='yuv420p')
  if colorspace:
    frame.colorspace = getattr(av.video.reformatter.Colorspace, colorspace)
  rgb = decode._to_rgb(frame, 0)
  assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
  swscale = frame.to_ndarray(format='rgb24')
  if fast:  # OpenCV: the exact formula (to rounding), unlike swscale's default table-based path.
    assert np.abs(rgb - _bt601_rgb(frame.to_ndarray(format='yuv420p'))).max() <= 2
    assert np.abs(rgb.astype(int) - swscale).max() <= 3
  else:  # BT.709-tagged: swscale, which reads the frame's colour space.
    np.testing.assert_array_equal(rgb, swscale)
  np.testing.assert_array_equal(decode._to_rgb(frame, 24), frame.to_ndarray(format='rgb24', width=32, height=24))


@pytest.fixture(scope='module')
def b_frame_videos(tmp_path_factory):
  """x264's defaults (keyframes up to 250 apart, 3 B-frames with b-pyramid): moving squares + noise, constant
  and variable frame rate, and frames coding their index."""
  d = tmp_path_factory.mktemp('b_frames')
  motion = synthetic.motion_frames(2, np.random.default_rng(0), num_frames=200, height=48, width=64, speed=2.0)
  paths = {'motion': str(d / 'motion.mp4'), 'vfr': str(d / 'vfr.mp4'), 'codes': str(d / 'codes.mp4')}
  synthetic.write_video(paths['motion'], motion, fps=30, gop=None, preset='medium')
  vfr_pts = np.sort(np.random.default_rng(1).choice(400, size=200, replace=False)).tolist()  # Gaps of 1-n frames.
  synthetic.write_video(paths['vfr'], motion, gop=None, preset='medium', pts=vfr_pts,
                        time_base=fractions.Fraction(1, 30))
  synthetic.write_video(paths['codes'], (testlib.code_frame(i) for i in range(200)), fps=30, gop=None,
                        preset='medium')
  return paths


def _every_frame_reference(path, indices):
  """Frames (N, H, W, 3) for `indices` by the documented rule, from a decode of every frame of the file."""
  with av.open(path) as container:
    stream = container.streams.video[0]
    fps, start = float(stream.average_rate), stream.start_time or 0
    frames = list(container.decode(stream))
    tb = float(stream.time_base)
  pts = np.array([f.pts for f in frames])
  chosen = [np.searchsorted(pts, start + (i + 0.5) / fps / tb, side='right') - 1 for i in indices]
  return np.stack([decode._to_rgb(frames[max(k, 0)], 0) for k in chosen])


def test_b_frame_videos_have_b_frames_and_long_gops(b_frame_videos):
  with av.open(b_frame_videos['motion']) as container:
    frames = list(container.decode(video=0))
  assert sum(f.key_frame for f in frames) <= 4  # Scene cuts add some to the one every 250 frames.
  assert sum(f.pict_type == av.video.frame.PictureType.B for f in frames) > len(frames) // 3


@pytest.mark.parametrize('name', ['motion', 'vfr', 'codes'])
def test_skipping_unused_frames_gives_identical_clips(b_frame_videos, name):
  path = b_frame_videos[name]
  rng = np.random.default_rng(2)
  clips = [sampling.clip_indices(s, s + 63, 16, 200) for s in rng.integers(0, 137, size=6)]
  clips += [sampling.segment_indices(200, 8, rng), np.array([199, 5, 6, 6, 120, 0]), np.array([198, 199])]
  total_decoded = {True: 0, False: 0}
  for indices in clips:
    reference = decode.decode_video(path, indices_fn(indices), skip_unused=False)
    for threads in (1, 2):
      clip = decode.decode_video(path, indices_fn(indices), threads=threads)
      np.testing.assert_array_equal(clip.frames, reference.frames)
    np.testing.assert_array_equal(clip.frames, _every_frame_reference(path, indices))
    if name == 'codes':
      np.testing.assert_array_equal(testlib.read_codes(clip.frames), indices)
    total_decoded[True] += clip.num_decoded
    total_decoded[False] += reference.num_decoded
  assert total_decoded[True] < 0.75 * total_decoded[False]
