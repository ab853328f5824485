"""Which frames a clip uses, exactly as PySlowFast picks them (pure functions on frame indices).

Train: one random clip of T frames spaced tau frames apart at `target_fps` (SlowFast `decoder.get_start_end_idx`
with clip_idx=-1). Test: K clips placed uniformly, with or without the offset rule, each viewed through S spatial
crops (SlowFast `kinetics.py` test expansion). Segment sampling (SSv2): one frame from each of T equal segments.
"""
import math

import numpy as np


def clip_size(num_frames: int, sampling_rate: int, target_fps: float, video_fps: float) -> float:
  """Frames of the source video one clip spans: T * tau frames at target_fps, in source frames (>= 1)."""
  return max(1.0, num_frames * sampling_rate * video_fps / target_fps)


def start_end(video_size: int, clip_span: float, clip_idx: int, num_clips: int, *,
              use_offset: bool = True, rng: np.random.Generator | None = None) -> tuple[float, float]:
  """First and last (fractional) frame of a clip; clip_idx=-1 draws a random start (needs `rng`).

  With use_offset the K test clips run from the first to the last possible start (`i * floor(delta / (K-1))`,
  the centre clip when K=1); without it clip i starts at `delta * i / K` (never reaching the end).
  """
  delta = max(video_size - clip_span, 0.0)
  if clip_idx == -1:
    start = rng.uniform(0.0, delta)
  elif use_offset:
    start = math.floor(delta / 2) if num_clips == 1 else clip_idx * math.floor(delta / (num_clips - 1))
  else:
    start = delta * clip_idx / num_clips
  return start, start + clip_span - 1


def clip_indices(start: float, end: float, num_frames: int, video_size: int) -> np.ndarray:
  """T frame indices (T,) int64: `linspace(start, end, T)` clamped to the video, truncated (short videos repeat)."""
  return np.clip(np.linspace(start, end, num_frames), 0, video_size - 1).astype(np.int64)


def train_clip_indices(video_size: int, video_fps: float, cfg, rng: np.random.Generator) -> np.ndarray:
  """Indices (T,) of one random training clip (or random-per-segment frames when cfg.segment_sampling)."""
  if cfg.segment_sampling:
    return segment_indices(video_size, cfg.num_frames, rng)
  span = clip_size(cfg.num_frames, cfg.sampling_rate, cfg.target_fps, video_fps)
  start, end = start_end(video_size, span, -1, 1, rng=rng)
  return clip_indices(start, end, cfg.num_frames, video_size)


def test_clip_indices(video_size: int, video_fps: float, clip_idx: int, cfg) -> np.ndarray:
  """Indices (T,) of test clip `clip_idx` of cfg.test_num_clips (segment middles when cfg.segment_sampling)."""
  if cfg.segment_sampling:
    return segment_indices(video_size, cfg.num_frames, None)
  span = clip_size(cfg.num_frames, cfg.sampling_rate, cfg.target_fps, video_fps)
  start, end = start_end(video_size, span, clip_idx, cfg.test_num_clips, use_offset=cfg.use_offset_sampling)
  return clip_indices(start, end, cfg.num_frames, video_size)


def segment_indices(video_size: int, num_segments: int, rng: np.random.Generator | None) -> np.ndarray:
  """One index per equal segment of [0, video_size - 1] (SlowFast `ssv2.get_seq_frames`).

  Segment i spans [round(s*i), round(s*(i+1))] with s = (video_size - 1) / T; a random frame of it (both ends
  included, as SlowFast's `random.randint`) when `rng` is given (train), else its middle (test). Returns (T,) int64.
  """
  seg = (video_size - 1) / num_segments
  out = np.empty(num_segments, np.int64)
  for i in range(num_segments):
    lo = int(np.round(seg * i))
    hi = int(np.round(seg * (i + 1)))
    out[i] = rng.integers(lo, hi + 1) if rng is not None else (lo + hi) // 2
  return out


def test_view(view_index: int, num_crops: int) -> tuple[int, int]:
  """(temporal clip index, spatial crop index) of view `view_index`; views run crop-fastest as in SlowFast.

  With one crop the spatial index is 1 (centre), as SlowFast forces it.
  """
  clip_idx, crop_idx = divmod(view_index, num_crops)
  return clip_idx, (1 if num_crops == 1 else crop_idx)
