"""A small synthetic video-classification dataset of real H.264 mp4 files, written with PyAV.

Class k is a shape moving in direction 2*pi*k/N on a wrap-around canvas. Start position, colours and size are
random, so every position is equally likely in every class: no single frame tells the classes apart, only the
motion does. Usage:

  python -m mvit_jax.data.synthetic --out DIR [--num-classes N] [--videos-per-class M] [--seed S]

writes DIR/videos/*.mp4, DIR/train.csv and DIR/val.csv (PySlowFast `path label` lines, paths relative to DIR) and
DIR/classes.txt.
"""
from collections.abc import Iterable, Sequence
import fractions
import os

from absl import app
from absl import flags
import av
import numpy as np


def write_video(path: str, frames: Iterable[np.ndarray], fps: float = 30, *, pts: Sequence[int] | None = None,
                time_base: fractions.Fraction | None = None, gop: int = 16, codec: str = 'libx264',
                crf: int = 18, audio_seconds: float = 0.0, faststart: bool = False) -> None:
  """Encodes uint8 RGB frames (H, W, 3) (H, W even) to `path`.

  pts/time_base give explicit timestamps (variable frame rate); gop is the keyframe interval; audio_seconds > 0 adds
  a silent AAC stream; faststart puts the index at the front (a truncated copy then still opens).
  """
  frames = iter(frames)
  first = next(frames)
  options = {'movflags': '+faststart'} if faststart else {}
  with av.open(path, 'w', options=options) as container:
    stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
    stream.height, stream.width = first.shape[:2]
    stream.pix_fmt = 'yuv420p'
    stream.options = {'g': str(gop), 'preset': 'ultrafast', 'crf': str(crf)} if codec == 'libx264' else {}
    if time_base is not None:
      stream.time_base = time_base
    audio = container.add_stream('aac', rate=16000) if audio_seconds > 0 else None
    for i, array in enumerate(_chain(first, frames)):
      frame = av.VideoFrame.from_ndarray(array, format='rgb24')
      if pts is not None:
        frame.pts, frame.time_base = pts[i], time_base
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
    if audio is not None:
      _write_silence(container, audio, audio_seconds)


def write_audio_only(path: str, seconds: float = 1.0) -> None:
  """Writes an mp4 holding a single silent AAC stream and no video stream."""
  with av.open(path, 'w') as container:
    _write_silence(container, container.add_stream('aac', rate=16000), seconds)


def _write_silence(container, stream, seconds):
  samples = 1024
  for i in range(int(seconds * 16000) // samples):
    frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format='fltp', layout='mono')
    frame.sample_rate, frame.pts = 16000, i * samples
    container.mux(stream.encode(frame))
  container.mux(stream.encode())


def _chain(first, rest):
  yield first
  yield from rest


def moving_shape_frames(label: int, num_classes: int, rng: np.random.Generator, *, num_frames: int, height: int,
                        width: int, speed: float) -> np.ndarray:
  """(num_frames, H, W, 3) uint8: a square moving `speed` px/frame in direction 2*pi*label/num_classes.

  The canvas wraps around, the start point is uniform, and shape size and colours are random.
  """
  angle = 2 * np.pi * label / num_classes
  velocity = speed * np.array([np.sin(angle), np.cos(angle)])  # (dy, dx); class 0 moves right.
  start = rng.uniform((0, 0), (height, width))
  side = rng.integers(max(4, min(height, width) // 6), max(5, min(height, width) // 3))
  background = rng.integers(0, 100, size=3)
  colour = rng.integers(155, 256, size=3)
  yy, xx = np.mgrid[:height, :width]
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  for t in range(num_frames):
    y0, x0 = start + t * velocity
    inside = (((yy - y0) % height) < side) & (((xx - x0) % width) < side)
    frames[t] = np.where(inside[..., None], colour, background)
  noise = rng.integers(-8, 9, size=frames.shape)
  return np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_dataset(out: str, *, num_classes: int = 4, videos_per_class: int = 40, seed: int = 0,
                  num_frames: int = 32, height: int = 48, width: int = 64, fps: float = 10, speed: float = 2.0,
                  val_fraction: float = 0.25) -> None:
  """Writes the dataset described in the module docstring (val_fraction of each class goes to val.csv)."""
  if num_classes < 2:
    raise ValueError(f'num_classes must be >= 2, got {num_classes}')
  if height % 2 or width % 2:
    raise ValueError(f'H.264 needs even frame sizes, got {height}x{width}')
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(out, 'videos'), exist_ok=True)
  num_val = max(1, int(round(videos_per_class * val_fraction)))
  lines = {'train': [], 'val': []}
  for label in range(num_classes):
    for i in range(videos_per_class):
      rel = os.path.join('videos', f'class{label:02d}_{i:04d}.mp4')
      frames = moving_shape_frames(label, num_classes, rng, num_frames=num_frames, height=height, width=width,
                                   speed=speed)
      write_video(os.path.join(out, rel), frames, fps=fps, gop=8)
      lines['val' if i < num_val else 'train'].append(f'{rel} {label}\n')
  for split, split_lines in lines.items():
    with open(os.path.join(out, f'{split}.csv'), 'w') as f:
      f.writelines(split_lines)
  with open(os.path.join(out, 'classes.txt'), 'w') as f:
    f.writelines(f'moving_{round(360 * k / num_classes)}deg\n' for k in range(num_classes))


_OUT = flags.DEFINE_string('out', None, 'Output folder.', required=True)
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 4, 'Number of motion directions (classes).')
_VIDEOS_PER_CLASS = flags.DEFINE_integer('videos_per_class', 40, 'Videos per class (a quarter go to val).')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_NUM_FRAMES = flags.DEFINE_integer('num_frames', 32, 'Frames per video.')
_HEIGHT = flags.DEFINE_integer('height', 48, 'Frame height (even).')
_WIDTH = flags.DEFINE_integer('width', 64, 'Frame width (even).')
_FPS = flags.DEFINE_float('fps', 10.0, 'Frame rate.')
_SPEED = flags.DEFINE_float('speed', 2.0, 'Shape speed in pixels per frame.')


def main(argv):
  del argv
  write_dataset(_OUT.value, num_classes=_NUM_CLASSES.value, videos_per_class=_VIDEOS_PER_CLASS.value,
                seed=_SEED.value, num_frames=_NUM_FRAMES.value, height=_HEIGHT.value, width=_WIDTH.value,
                fps=_FPS.value, speed=_SPEED.value)
  print(f'wrote {_NUM_CLASSES.value * _VIDEOS_PER_CLASS.value} videos to {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
