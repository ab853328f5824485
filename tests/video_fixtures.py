"""Tiny test videos whose frames encode their own index (and a video id), plus a torture set of bad files.

Frame i of video v shows 12 horizontal stripes of 5 px (H = 60): stripe b is white when bit b of (v << 8 | i) is
set, black otherwise. Horizontal stripes survive H.264, short-side resizes, horizontal crops and flips, so
`read_codes` recovers (video id, frame index) from decoded or augmented frames.
"""
import fractions
import os

import av
import numpy as np

from mvit_jax.data import synthetic

HEIGHT, WIDTH = 60, 80
NUM_BITS, STRIPE = 12, 5


def code_frame(code: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
  """(H, W, 3) uint8 frame showing `code` (< 4096) as stripes."""
  bits = (code >> np.arange(NUM_BITS)) & 1
  rows = np.repeat(bits * 255, height // NUM_BITS).astype(np.uint8)
  return np.broadcast_to(rows[:, None, None], (height, width, 3)).copy()


def read_codes(frames: np.ndarray) -> np.ndarray:
  """Codes (N,) from frames (N, H, W, C) with any value range: stripes brighter than the midrange are 1."""
  frames = np.asarray(frames, np.float64).mean(axis=(2, 3))  # (N, H)
  height = frames.shape[1]
  centres = ((np.arange(NUM_BITS) + 0.5) * height / NUM_BITS).astype(int)
  mid = (frames.max() + frames.min()) / 2
  bits = frames[:, centres] > mid
  return (bits * (1 << np.arange(NUM_BITS))).sum(axis=1)


def write_index_video(path: str, num_frames: int, *, fps: float = 30, video_id: int = 0, gop: int = 16,
                      pts=None, time_base=None, audio_seconds: float = 0.0, faststart: bool = False) -> str:
  """Writes frames coding (video_id << 8 | i) for i < num_frames (< 256); returns path."""
  frames = (code_frame(video_id << 8 | i) for i in range(num_frames))
  synthetic.write_video(path, frames, fps=fps, gop=gop, pts=pts, time_base=time_base, audio_seconds=audio_seconds,
                        faststart=faststart)
  return path


def write_two_video_streams(path: str, num_frames: int) -> str:
  """An mp4 whose first video stream codes frame indices and whose second shows constant grey."""
  with av.open(path, 'w') as container:
    streams = []
    for _ in range(2):
      stream = container.add_stream('libx264', rate=30)
      stream.height, stream.width, stream.pix_fmt = HEIGHT, WIDTH, 'yuv420p'
      streams.append(stream)
    for i in range(num_frames):
      for stream, array in zip(streams, (code_frame(i), np.full((HEIGHT, WIDTH, 3), 128, np.uint8))):
        container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format='rgb24')))
    for stream in streams:
      container.mux(stream.encode())
  return path


# VFR fixture: 10 frames at these millisecond timestamps.
VFR_PTS_MS = (0, 33, 66, 200, 233, 500, 533, 566, 600, 1000)


def write_vfr_video(path: str) -> str:
  return write_index_video(path, len(VFR_PTS_MS), pts=list(VFR_PTS_MS), time_base=fractions.Fraction(1, 1000))


def write_torture_set(folder: str) -> tuple[dict[str, str], dict[str, str]]:
  """Writes good and bad files; returns ({name: path} of good ones, {name: path} of bad ones).

  Bad: zero-byte, truncated (index at the end, so it does not open), truncated with the index in front (opens,
  frames missing), a text file named .mp4, audio only. Good: a 3-frame video, a VFR video, a normal one with audio.
  """
  os.makedirs(folder, exist_ok=True)
  p = lambda name: os.path.join(folder, name)  # pylint: disable=unnecessary-lambda-assignment
  good = {
      'three_frames': write_index_video(p('three_frames.mp4'), 3, video_id=1),
      'vfr': write_vfr_video(p('vfr.mp4')),
      'normal_with_audio': write_index_video(p('normal with audio.mp4'), 64, video_id=2, audio_seconds=1.0),
  }
  open(p('zero.mp4'), 'wb').close()
  with open(p('text.mp4'), 'w') as f:
    f.write('this is not a video\n' * 20)
  synthetic.write_audio_only(p('audio_only.mp4'))
  for name, faststart in (('truncated.mp4', False), ('truncated_faststart.mp4', True)):
    write_index_video(p(name), 200, video_id=3, faststart=faststart)
    with open(p(name), 'rb') as f:
      data = f.read()
    with open(p(name), 'wb') as f:
      f.write(data[:len(data) // 3])
  bad = {name: p(name + '.mp4') for name in ('zero', 'text', 'audio_only', 'truncated', 'truncated_faststart')}
  return good, bad


def write_manifest(path: str, entries) -> str:
  """Writes `path label` lines for (path, label) entries; returns path."""
  with open(path, 'w') as f:
    f.writelines(f'{p} {label}\n' for p, label in entries)
  return path
