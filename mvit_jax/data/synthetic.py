"""A small synthetic video-classification dataset of real H.264 mp4 files, written with PyAV.

Class k is a square doing motion CLASS_NAMES[k] (up, down, sideways, still, growing, shrinking) on a wrap-around
canvas. Start position, colours and (where it does not change) size are random, so no single frame tells the
classes apart, only the motion does; horizontal flips and crops keep the class. Usage:

  python -m mvit_jax.data.synthetic --out DIR [--num-classes N] [--videos-per-class M] [--seed S]

writes DIR/videos/*.mp4, DIR/train.csv and DIR/val.csv (PySlowFast `path label` lines, paths relative to DIR) and
DIR/classes.txt. DIR may be a bucket URL (gs://...).
"""
from collections.abc import Iterable, Sequence
import fractions
import os
import tempfile

from absl import app
from absl import flags
import av
import numpy as np

from mvit_jax.system import storage


def write_video(path: str, frames: Iterable[np.ndarray], fps: float = 30, *, pts: Sequence[int] | None = None,
                time_base: fractions.Fraction | None = None, gop: int | None = 16, codec: str = 'libx264',
                crf: int = 18, preset: str = 'ultrafast', audio_seconds: float = 0.0,
                faststart: bool = False) -> None:
  """Encodes uint8 RGB frames (H, W, 3) (H, W even) to `path`.

  pts/time_base give explicit timestamps (variable frame rate); gop is the keyframe interval (None: x264's default,
  up to 250 frames and at scene cuts); preset is x264's (ultrafast has no B-frames, slower presets have, 'medium'
  is x264's default: 3 B-frames, b-pyramid); audio_seconds > 0 adds
  a silent AAC stream; faststart puts the index at the front (a truncated copy then still opens).
  """
  frames = iter(frames)
  first = next(frames)
  options = {'movflags': '+faststart'} if faststart else {}
  with av.open(path, 'w', options=options) as container:
    stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
    stream.height, stream.width = first.shape[:2]
    stream.pix_fmt = 'yuv420p'
    x264 = {'preset': preset, 'crf': str(crf)} | ({} if gop is None else {'g': str(gop)})
    stream.options = x264 if codec == 'libx264' else {}
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


def write_video_file(path: str, frames: Iterable[np.ndarray], **kwargs) -> None:
  """write_video to a local path or a URL: the muxer seeks back to finish the file, so a URL's video is encoded
  into a temporary local file, then uploaded."""
  if not storage.is_url(path):
    write_video(path, frames, **kwargs)
    return
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, storage.name(path))
    write_video(local, frames, **kwargs)
    storage.copy_file(local, path)


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


# Motion classes, in label order; --num-classes N uses the first N. Each is unchanged by horizontal flips and
# crops (the default training augmentations), and none can be told from a single frame.
CLASS_NAMES = ('moving_up', 'moving_down', 'moving_sideways', 'standing_still', 'growing', 'shrinking')


def motion_frames(label: int, rng: np.random.Generator, *, num_frames: int, height: int, width: int,
                  speed: float) -> np.ndarray:
  """(num_frames, H, W, 3) uint8: a square doing motion CLASS_NAMES[label] on a wrap-around canvas.

  Start position is uniform and colours random; moving squares go `speed` px/frame (sideways: left or right at
  random); the size is random, or for growing/shrinking runs linearly between min(H, W)/8 and min(H, W)/2.
  """
  name = CLASS_NAMES[label]
  short = min(height, width)
  small, large = max(3, short // 8), max(4, short // 2)
  velocity = {'moving_up': (-speed, 0.0), 'moving_down': (speed, 0.0),
              'moving_sideways': (0.0, speed * rng.choice([-1, 1]))}.get(name, (0.0, 0.0))
  sizes = np.full(num_frames, rng.integers(small, (small + large) // 2 + 1), np.float64)
  if name in ('growing', 'shrinking'):
    sizes = np.linspace(small, large, num_frames)[::1 if name == 'growing' else -1]
  centre = rng.uniform((0, 0), (height, width))
  background = rng.integers(0, 100, size=3)
  colour = rng.integers(155, 256, size=3)
  yy, xx = np.mgrid[:height, :width]
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  for t in range(num_frames):
    cy, cx = centre + t * np.asarray(velocity)
    half = sizes[t] / 2
    dy = (yy - cy + height / 2) % height - height / 2  # Signed wrap-around distance to the centre.
    dx = (xx - cx + width / 2) % width - width / 2
    inside = (np.abs(dy) < half) & (np.abs(dx) < half)
    frames[t] = np.where(inside[..., None], colour, background)
  noise = rng.integers(-8, 9, size=frames.shape)
  return np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)


BENCH_WIDTH, BENCH_HEIGHT, BENCH_FPS, BENCH_SECONDS = 340, 256, 30, 10


def write_bench_videos(folder: str, num_videos: int) -> list[str]:
  """The benchmarks' videos: `folder/v{i}.mp4` (local or URL), 340x256, 10 s at 30 fps, a keyframe every 16
  frames (as scripts/prepare_videos.py writes Kinetics), moving squares + noise of class i % 6; written once, then
  reused."""
  storage.makedirs(folder)
  paths = []
  for i in range(num_videos):
    path = storage.join(folder, f'v{i}.mp4')
    if not storage.exists(path):
      frames = motion_frames(i % 6, np.random.default_rng(i), num_frames=BENCH_FPS * BENCH_SECONDS,
                             height=BENCH_HEIGHT, width=BENCH_WIDTH, speed=3.0)
      write_video_file(path, frames, fps=BENCH_FPS, gop=16, crf=23)
    paths.append(path)
  return paths


def write_dataset(out: str, *, num_classes: int = 4, videos_per_class: int = 40, seed: int = 0,
                  num_frames: int = 32, height: int = 48, width: int = 64, fps: float = 10, speed: float = 2.0,
                  val_fraction: float = 0.25) -> None:
  """Writes the dataset described in the module docstring (val_fraction of each class goes to val.csv)."""
  if not 2 <= num_classes <= len(CLASS_NAMES):
    raise ValueError(f'num_classes must be in [2, {len(CLASS_NAMES)}], got {num_classes}')
  if height % 2 or width % 2:
    raise ValueError(f'H.264 needs even frame sizes, got {height}x{width}')
  rng = np.random.default_rng(seed)
  storage.makedirs(storage.join(out, 'videos'))
  num_val = max(1, int(round(videos_per_class * val_fraction)))
  lines = {'train': [], 'val': []}
  for label in range(num_classes):
    for i in range(videos_per_class):
      rel = f'videos/class{label:02d}_{i:04d}.mp4'
      frames = motion_frames(label, rng, num_frames=num_frames, height=height, width=width, speed=speed)
      write_video_file(storage.join(out, rel), frames, fps=fps, gop=8)
      lines['val' if i < num_val else 'train'].append(f'{rel} {label}\n')
  for split, split_lines in lines.items():
    storage.write_text(storage.join(out, f'{split}.csv'), ''.join(split_lines))
  storage.write_text(storage.join(out, 'classes.txt'), ''.join(f'{name}\n' for name in CLASS_NAMES[:num_classes]))




def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  write_dataset(FLAGS.out, num_classes=FLAGS.num_classes, videos_per_class=FLAGS.videos_per_class,
                seed=FLAGS.seed, num_frames=FLAGS.num_frames, height=FLAGS.height, width=FLAGS.width,
                fps=FLAGS.fps, speed=FLAGS.speed)
  print(f'wrote {FLAGS.num_classes * FLAGS.videos_per_class} videos to {FLAGS.out}')


def _define_flags():
  """Command-line flags, defined only when run as a program (importing the module defines none)."""
  flags.DEFINE_string('out', None, 'Output folder.', required=True)
  flags.DEFINE_integer('num_classes', 4, f'Number of classes, the first of {CLASS_NAMES}.')
  flags.DEFINE_integer('videos_per_class', 40, 'Videos per class (a quarter go to val).')
  flags.DEFINE_integer('seed', 0, 'Random seed.')
  flags.DEFINE_integer('num_frames', 32, 'Frames per video.')
  flags.DEFINE_integer('height', 48, 'Frame height (even).')
  flags.DEFINE_integer('width', 64, 'Frame width (even).')
  flags.DEFINE_float('fps', 10.0, 'Frame rate.')
  flags.DEFINE_float('speed', 2.0, 'Shape speed in pixels per frame.')
  for name in ('num_classes', 'videos_per_class', 'num_frames'):  # The issue spells them with dashes.
    flags.DEFINE_alias(name.replace('_', '-'), name)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
