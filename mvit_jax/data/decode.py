"""Decode only the frames a clip needs, with PyAV (video files) or OpenCV (folders of JPEG frames).

Frames are addressed by index on the video's nominal frame grid (index i is time i / fps from the stream start);
frame i is the frame shown at that time (the last frame whose timestamp is at most half a nominal frame later),
so variable-frame-rate files are sampled by time, not by decode order. A video shorter than the clip repeats
frames because the sampler clamps indices (sampling.py). Only the first video stream is read; audio and further
video streams are ignored.

Hand-written rather than a library call: PyAV has no "decode these indices" API, and the selective seek + forward
decode (leaving out the non-reference frames no index resolves to) + convert-only-the-sampled-frames loop is what
makes decoding a 16x4 clip cheap. scripts/bench_decode.py compares it with FFmpeg threading, OpenCV, torchcodec and
decord2.

Paths may be bucket URLs (mvit_jax.system.storage): a file that cannot be fetched fails like a corrupt one.
"""
import bisect
import collections
from collections.abc import Callable
import contextlib
import dataclasses
import io
import math
import os

import av
import cv2
import numpy as np
from PIL import Image

from mvit_jax.system import storage

cv2.setNumThreads(1)  # Loaders and `scan` run one process per core; OpenCV's own pool would oversubscribe them.

# EOF this many nominal frames (or this fraction of the video) before a requested frame means a truncated file.
_MAX_MISSING_FRAMES = 2
_MAX_MISSING_FRACTION = 0.05
# Packets whose timestamps may prove a frame unused: more than an H.264 reorder depth (x264: up to 16 B frames).
_LOOKBACK_PACKETS = 32


class DecodeError(Exception):
  """The file cannot give the requested frames; the message says why."""


class _UnusableTimestamps(Exception):
  """Decoded frames lack timestamps or come out of order: frames must be counted instead."""


@dataclasses.dataclass(frozen=True)
class Clip:
  """Decoded frames (N, H, W, 3) uint8 for `indices` (N,), and what the decoder learnt about the video."""
  frames: np.ndarray
  indices: np.ndarray
  fps: float
  num_video_frames: int
  num_decoded: int  # Frames the decoder produced (including those before the clip after a keyframe seek).


IndexFn = Callable[[int, float], np.ndarray]  # (num_video_frames, fps) -> frame indices (N,), any order/repeats.


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) after scaling the short side to `short_side` (0 keeps the size), rounding the long side."""
  if not short_side or min(height, width) == short_side:
    return height, width
  if height <= width:
    return short_side, int(round(width * short_side / height))
  return int(round(height * short_side / width)), short_side


def decode_video(path: str, index_fn: IndexFn, *, short_side: int = 0, threads: int = 1,
                 skip_unused: bool = True, head: bytes | Exception | None = None) -> Clip:
  """Decodes the frames `index_fn(num_video_frames, fps)` asks for from a video file.

  Seeks to the keyframe before the first requested frame, decodes forward until the last one (skipping the
  non-reference frames that no requested index resolves to, unless `skip_unused` is False: the reference the
  tests and scripts/bench_decode.py compare against), RGB-converts (and resizes to `short_side`) only the
  requested frames, and closes the file. Raises DecodeError naming the cause. `head`: a URL's first bytes (or the
  error reading them) as `storage.read_heads` gave them, fetched ahead; None reads them here.
  """
  with contextlib.ExitStack() as open_files:
    container = _open(path, open_files, head)
    try:
      if not container.streams.video:
        raise DecodeError('no video stream')
      stream = container.streams.video[0]
      # FFmpeg's default (slice threads, one per core, started for every file) costs more CPU and wall time than
      # it saves on a 16-frame clip of one-slice H.264 (docs/performance.md): one thread unless asked; loaders
      # already run one process per core.
      stream.codec_context.thread_count = threads
      if threads != 1:
        stream.thread_type = 'AUTO'
      return _decode(container, stream, index_fn, short_side, skip_unused)
    except DecodeError:
      raise
    except Exception as e:  # Anything the demuxer/decoder (or a store's read) throws is a property of this file.
      raise DecodeError(f'{type(e).__name__} while decoding: {e}') from None


def _open(path: str, open_files: contextlib.ExitStack, head: bytes | Exception | None = None):
  """The PyAV container of a local file, or of a URL's object read by `storage.open_file` (one request for an
  object up to 8 MiB unless its `head` was fetched ahead, large range requests beyond, never one request per PyAV
  read); closed with `open_files`. Raises DecodeError."""
  try:
    if isinstance(head, Exception):
      raise head
    if storage.is_url(path):
      source = open_files.enter_context(storage.open_file(path, 'rb', head=head))
      size = source.size
    else:
      source = path
      size = os.path.getsize(path) if os.path.isfile(path) else None
    if size == 0:
      raise DecodeError('empty file (0 bytes)')
    container = av.open(source)
    open_files.callback(container.close)
    return container
  except DecodeError:
    raise
  except FileNotFoundError:
    raise DecodeError('missing file') from None
  except Exception as e:  # pylint: disable=broad-except  (PyAV's errors, or a store's after its retries)
    raise DecodeError(f'cannot open: {e}') from None


def stream_timing(container, stream) -> tuple[float, int]:
  """(fps, frames) of a video stream from its header: the frame count the header states, else duration x fps;
  zeros where the header says nothing."""
  fps = float(stream.average_rate or stream.guessed_rate or 0)
  duration = (stream.duration * float(stream.time_base) if stream.duration
              else (container.duration or 0) / av.time_base)
  return fps, stream.frames or int(round(duration * fps))


def _decode(container, stream, index_fn, short_side, skip_unused):
  fps, num_video_frames = stream_timing(container, stream)
  start_pts = stream.start_time or 0
  if fps <= 0 or num_video_frames <= 0:
    return _decode_all(container, stream, index_fn, short_side, fps)

  indices = np.asarray(index_fn(num_video_frames, fps), np.int64)
  wanted = np.unique(indices)
  # Index i is answered by the last frame with pts <= pts(i) + half a nominal frame.
  frame_pts = 1.0 / fps / float(stream.time_base)
  thresholds = start_pts + (wanted + 0.5) * frame_pts
  try:
    result = _decode_forward(container, stream, thresholds, short_side, skip_unused,
                             seek_pts=thresholds[0] - 2 * frame_pts)
    if result is None:  # The seek landed after the first wanted frame (imprecise index): decode from the start.
      result = _decode_forward(container, stream, thresholds, short_side, skip_unused, seek_pts=start_pts)
  except _UnusableTimestamps:
    result = None
  if result is None:  # Timestamps out of order or late (e.g. AVI with B-frames): count frames instead.
    container.seek(start_pts, backward=True, any_frame=False, stream=stream)
    return _decode_all(container, stream, index_fn, short_side, fps)
  arrays, last_pts, last_array, num_decoded = result
  if len(arrays) < len(wanted):  # EOF first: the last frame stands for requested frames just past it.
    last_index = (last_pts - start_pts) / frame_pts
    if wanted[-1] - last_index > max(_MAX_MISSING_FRAMES, _MAX_MISSING_FRACTION * num_video_frames):
      raise DecodeError(f'stream ends at frame {last_index:.0f} but the header promises {num_video_frames} '
                        'frames (truncated?)')
    arrays += [last_array] * (len(wanted) - len(arrays))
  lookup = dict(zip(wanted.tolist(), arrays))
  frames = np.stack([lookup[i] for i in indices.tolist()])
  return Clip(frames, indices, fps, num_video_frames, num_decoded)


def _decode_forward(container, stream, thresholds, short_side, skip_unused, seek_pts):
  """Seeks to the keyframe at or before `seek_pts` and decodes forward until the last of `thresholds`.

  Returns (RGB arrays for the thresholds reached, pts of the last frame, its RGB array or None, frames decoded),
  or None when the first decoded frame already lies past thresholds[0].
  """
  container.seek(max(int(seek_pts), stream.start_time or 0), backward=True, any_frame=False, stream=stream)
  arrays, held, held_pts, held_array, num_decoded, j = [], None, None, None, 0, 0
  # Without frame reordering no packet comes before one shown earlier, so none could be skipped: plain decode.
  skip = skip_unused and stream.codec_context.has_b_frames
  frames = _decode_needed(container, stream, thresholds) if skip else container.decode(stream)
  for frame in frames:
    pts = frame.pts if frame.pts is not None else frame.dts
    if pts is None or (held_pts is not None and pts <= held_pts):
      raise _UnusableTimestamps()
    while j < len(thresholds) and pts > thresholds[j]:
      if held is None:
        return None
      if held_array is None:  # Convert each sampled frame once, however many indices it answers.
        held_array = _to_rgb(held, short_side)
      arrays.append(held_array)
      j += 1
    if j == len(thresholds):
      return arrays, pts, None, num_decoded
    held, held_pts, held_array = frame, pts, None
    num_decoded += 1
  if held is None:
    raise DecodeError('no frames decoded at or after the requested time (truncated?)')
  return arrays, held_pts, _to_rgb(held, short_side) if held_array is None else held_array, num_decoded


def _decode_needed(container, stream, thresholds):
  """Decodes the stream from the current position, skipping non-reference frames that no threshold can resolve to.

  Index i resolves to the last frame with pts <= its threshold, so a frame with pts p is never used when another
  frame has pts in (p, t], t the first threshold >= p. The packets demuxed so far tell that: in decode order a
  frame's later-shown reference frames come before it (the P frame before the B frames that precede it on screen),
  so most B frames between the sampled ones, and before the first, are known to be unused when they arrive.
  Those packets go to the decoder with skip_frame NONREF: it drops them if they are non-reference frames (nothing
  else depends on them) and decodes them normally if they are not, so the output frames that a threshold resolves
  to are the same as when every frame is decoded. Hand-written because FFmpeg decides skips per frame type only,
  and PyAV has no frame selection.
  """
  codec, thresholds = stream.codec_context, thresholds.tolist()
  recent = collections.deque(maxlen=_LOOKBACK_PACKETS)
  codec.skip_frame = current = 'DEFAULT'
  for packet in container.demux(stream):
    pts, skip = packet.pts, 'DEFAULT'
    if pts is not None:
      k = bisect.bisect_left(thresholds, pts)
      limit = thresholds[k] if k < len(thresholds) else math.inf
      if any(pts < q <= limit for q in recent):
        skip = 'NONREF'
      recent.append(pts)
    if skip != current:
      codec.skip_frame = current = skip
    yield from packet.decode()
  codec.skip_frame = 'DEFAULT'


def _decode_all(container, stream, index_fn, short_side, fps):
  """Fallback when the header lacks frame rate or length, or timestamps are unusable: decode everything (kept
  as YUV frames, RGB-converting only the requested ones) and index frames in output order. `fps` is the header's
  rate, or 0 to estimate it from the timestamps (30 when they do not tell)."""
  stream.codec_context.skip_frame = 'DEFAULT'  # A selective forward decode may have stopped while skipping.
  frames = list(container.decode(stream))
  if not frames:
    raise DecodeError('no decodable video frames')
  if fps <= 0:
    pts = [f.pts for f in frames if f.pts is not None]
    span = (max(pts) - min(pts)) * float(stream.time_base) if len(pts) > 1 else 0.0
    fps = (len(pts) - 1) / span if span > 0 else 30.0
  indices = np.asarray(index_fn(len(frames), fps), np.int64)
  cache = {i: _to_rgb(frames[i], short_side) for i in np.unique(indices).tolist()}
  return Clip(np.stack([cache[i] for i in indices.tolist()]), indices, fps, len(frames), len(frames))


# AVColorSpace / AVColorRange values that mean BT.601 limited range (what H.264 decoders report for SD video).
_BT601_SPACES = frozenset({2, 5, 6})  # UNSPECIFIED, BT470BG, SMPTE170M
_LIMITED_RANGES = frozenset({0, 1})  # UNSPECIFIED, MPEG


def _to_rgb(frame, short_side):
  """(H, W, 3) uint8 RGB of a decoded frame, its short side scaled to `short_side` (0: native size).

  Native-size yuv420p BT.601 frames (most H.264/MPEG-4 video) are converted by OpenCV, which computes the exact
  BT.601 formula (nearest chroma, within 2 levels of the float result) in half the time of swscale's default
  path, whose table-based conversion comes out ~1 level darker. Anything else (scaling, other pixel formats or
  colour spaces) goes through swscale, which honours the frame's colour metadata.
  """
  height, width = resized_shape(frame.height, frame.width, short_side)
  if ((height, width) == (frame.height, frame.width) and frame.format.name == 'yuv420p' and not height % 2
      and not width % 2 and frame.colorspace in _BT601_SPACES and frame.color_range in _LIMITED_RANGES):
    return cv2.cvtColor(frame.to_ndarray(format='yuv420p'), cv2.COLOR_YUV2RGB_I420)
  return frame.to_ndarray(format='rgb24', width=width, height=height)


def probe_video(path: str) -> Clip:
  """Decodes the first frame, then seeks to and decodes the last one (a truncated stream fails there).

  Returns the first frame's Clip (length, fps, size); raises DecodeError if the file is bad.
  """
  first = decode_video(path, lambda n, fps: np.array([0]))
  decode_video(path, lambda n, fps: np.array([n - 1]))
  return first


def list_frame_files(folder: str, pattern: str = '*.jpg') -> list[str]:
  """Sorted frame files of a frame folder (local or URL); raises DecodeError when there are none."""
  try:
    files = storage.glob(folder, pattern)
  except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
    raise DecodeError(f'cannot list folder: {e}') from None
  if not files:
    raise DecodeError(f'no frames matching {pattern!r} in folder')
  return files


# OpenCV decodes a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) when asked with these flags.
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def decode_image(data: bytes, short_side: int = 0, shape: tuple[int, int] | None = None) -> np.ndarray:
  """(H, W, 3) uint8 RGB of an encoded image (JPEG, PNG, ...), its short side scaled to `short_side` (0: as
  stored). `shape`: its stored (height, width) when known, else read from the header. A smaller size is decoded
  at the largest reduced JPEG scale that stays at least as large, then resized (bilinear).

  OpenCV rather than Pillow: the same libjpeg-turbo decode in half the CPU time (Pillow copies the pixels twice).
  Raises ValueError when the bytes do not decode.
  """
  if shape is None:
    with Image.open(io.BytesIO(data)) as image:  # Reads the header only.
      shape = image.height, image.width
  height, width = shape
  out_height, out_width = resized_shape(height, width, short_side)
  flag = cv2.IMREAD_COLOR
  if (out_height, out_width) != (height, width):
    flag = next((f for r, f in _REDUCED if height // r >= out_height and width // r >= out_width), flag)
  bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
  if bgr is None:
    raise ValueError('not a decodable image')
  if bgr.shape[:2] != (out_height, out_width):
    bgr = cv2.resize(bgr, (out_width, out_height), interpolation=cv2.INTER_LINEAR)
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_size(path: str) -> tuple[int, int]:
  """(H, W) of an image file (local or URL) from its header; raises DecodeError when it cannot be read."""
  try:
    with Image.open(io.BytesIO(storage.read_bytes(path)) if storage.is_url(path) else path) as image:
      return image.height, image.width
  except Exception as e:  # pylint: disable=broad-except  (Pillow's errors, or a store's after its retries)
    raise DecodeError(f'cannot read frame {path}: {e}') from None


def decode_frame_folder(folder: str, index_fn: IndexFn, *, fps: float, pattern: str = '*.jpg',
                        short_side: int = 0) -> Clip:
  """Loads the frames `index_fn(num_frames, fps)` asks for from a folder of image files (sorted by name).

  JPEGs are decoded at reduced size when `short_side` allows it (`decode_image`), then resized exactly.
  """
  return decode_frame_files(list_frame_files(folder, pattern), index_fn, fps=fps, short_side=short_side)


def decode_frame_files(files, index_fn: IndexFn, *, fps: float, short_side: int = 0) -> Clip:
  """Loads the frames `index_fn(len(files), fps)` asks for from a sequence of image files (local or URLs), frame i
  being files[i]; each distinct frame is read once. Raises DecodeError naming the file that cannot be read."""
  indices = np.asarray(index_fn(len(files), fps), np.int64)
  wanted = np.unique(indices).tolist()
  # Frames in a bucket are requested all at once: one request's latency for the clip, not one per frame.
  urls = [files[i] for i in wanted if storage.is_url(files[i])]
  fetched = dict(zip(urls, storage.read_many(urls)))
  cache = {}
  for i in wanted:
    try:
      data = fetched[files[i]] if files[i] in fetched else storage.read_bytes(files[i])
      if isinstance(data, Exception):
        raise data
      cache[i] = decode_image(data, short_side)
    except Exception as e:  # pylint: disable=broad-except  (decoders' errors, or a store's after its retries)
      raise DecodeError(f'cannot read frame {files[i]}: {e}') from None
  return Clip(np.stack([cache[i] for i in indices.tolist()]), indices, fps, len(files), len(cache))
