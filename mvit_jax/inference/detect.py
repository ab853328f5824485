"""Action detection on given person boxes: a detector's per-box action scores on video files.

    predictor = inference.load(DETECTOR_DIR)                    # a model card with overrides.detection = true
    boxes = detect.read_boxes_csv('boxes.csv')                  # {video_id: {sec: float32 (n, 4)}}
    for result in detect.predict_video(predictor, 'clip.mp4', boxes['clip']):
      result.sec, result.boxes, result.scores                   # int, (n, 4), (n, K) sigmoid scores

A keyframe (video, second) becomes the model's input as the AVA evaluation loader makes it (`mvit_jax.data.ava`):
the clip of `num_frames` frames `sampling_rate` apart at the card's frame rate centred on the keyframe
(`ava.clip_frame_indices`, clamped to the video), only those frames decoded from the file, then the card's test view
with the boxes carried along (`ava_transforms.eval_clip`: short side to crop_size, then the centre crop or the
full frame). Box coordinates are (x1, y1, x2, y2) normalised to the frame they lie on; a box's part outside a centre
crop is cut off (a box wholly outside becomes a zero-width box on the crop's edge and gets the scores of that edge,
as PySlowFast's evaluation gives them), and `visible` tells how much of each box the view shows.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
import copy
import dataclasses
import math

import numpy as np

from mvit_jax.data import ava
from mvit_jax.data import ava_transforms
from mvit_jax.data import decode
from mvit_jax.data import transforms
from mvit_jax.system import storage
from mvit_jax.system.errors import InputError

BOXES_FORMAT = '`video_id,sec,x1,y1,x2,y2[,...]` (x, y normalised to [0, 1])'


def read_boxes_csv(path: str) -> dict[str, dict[int, np.ndarray]]:
  """video id -> second -> float32 boxes (n, 4) of an AVA-format box CSV (local or URL): the first six columns of
  each row (more columns, e.g. action id and score, are read past); rows with the same coordinate text at the same
  (video, second) are one box, in the order first seen (as PySlowFast merges them). Raises InputError naming the file
  and line of a row that is not one, or a file without rows."""
  try:
    lines = storage.read_text(path).splitlines()
  except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
    raise InputError(f'--boxes: cannot read {path}: {storage.describe_error(e)}') from None
  merged: dict[str, dict[int, dict[str, tuple[float, ...]]]] = {}
  for lineno, line in enumerate(lines, 1):
    row = [field.strip() for field in line.strip().split(',')]
    if row == ['']:
      continue
    where = f'{path}:{lineno}'
    if len(row) < 6 or not row[0]:
      raise InputError(f'{where}: expected {BOXES_FORMAT}, got {line!r}')
    try:
      sec = int(row[1])
      box = tuple(float(x) for x in row[2:6])
    except ValueError:
      raise InputError(f'{where}: the second or a coordinate is not a number: {line!r}') from None
    if not all(0 <= x <= 1 for x in box) or box[0] > box[2] or box[1] > box[3]:
      raise InputError(f'{where}: box {box} is not 0 <= x1 <= x2 <= 1, 0 <= y1 <= y2 <= 1')
    merged.setdefault(row[0], {}).setdefault(sec, {}).setdefault(','.join(row[2:6]), box)
  if not merged:
    raise InputError(f'--boxes: {path} has no rows ({BOXES_FORMAT})')
  return {video: {sec: np.array(list(boxes.values()), np.float32) for sec, boxes in secs.items()}
          for video, secs in merged.items()}


def video_id(path: str) -> str:
  """The AVA video id of a video file: its name without the extension."""
  return storage.name(path).rsplit('.', 1)[0]


def keyframe_config(data_config, start_sec: int):
  """A copy of a detector's data config (`Predictor.data_config`) whose keyframe second `start_sec` is the video
  file's time 0 (the clips are read as `ava.AvaSource` reads video files)."""
  cfg = copy.deepcopy(data_config)
  cfg.ava_frame_start_sec = cfg.ava_video_start_sec = start_sec
  return cfg


def clip_indices(sec: int, num_video_frames: int, fps: float, cfg) -> np.ndarray:
  """Video frame indices (T,) int64 of the clip centred on AVA second `sec`, as `ava.AvaSource.load` reads them
  from a video file (`ava.video_clip_indices`). Raises decode.DecodeError when the keyframe lies outside the video."""
  offset = sec - cfg.ava_video_start_sec
  if offset < 0 or math.floor(offset * fps + 0.5) > num_video_frames - 1:
    raise decode.DecodeError(f'second {sec} is outside the video ({num_video_frames / fps:.2f} s from second '
                             f'{cfg.ava_video_start_sec:g})')
  return ava.video_clip_indices(sec, num_video_frames, fps, cfg)


def visible_fraction(boxes: np.ndarray, frame_shape: tuple[int, int], cfg) -> np.ndarray:
  """float64 (n,): the share of each box's area (normalised to a (H, W) frame) inside the test view of that frame
  (1 for the full view; 0 for a box wholly outside a centre crop, and for a zero-area box not inside it)."""
  boxes = np.asarray(boxes, np.float64)
  if cfg.ava_test_view == 'full':
    return np.ones(len(boxes))
  # The centre crop's window in coordinates normalised to the frame, from the resized frame it is cut from.
  shape = transforms.short_side_shape(*frame_shape, cfg.crop_size)
  top, left, height, width = transforms.uniform_crop_box(shape[0], shape[1], cfg.crop_size, 1)
  window = np.array([left / shape[1], top / shape[0], (left + width) / shape[1], (top + height) / shape[0]])
  inside_w = np.clip(np.minimum(boxes[:, 2], window[2]) - np.maximum(boxes[:, 0], window[0]), 0, None)
  inside_h = np.clip(np.minimum(boxes[:, 3], window[3]) - np.maximum(boxes[:, 1], window[1]), 0, None)
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  return np.where(area > 0, inside_w * inside_h / np.where(area > 0, area, 1), 0.0)


@dataclasses.dataclass
class KeyframeResult:
  """One keyframe's outcome: per-box scores, or the reason its clip could not be read."""
  video: str                            # The video file.
  sec: int                              # The keyframe's AVA second.
  boxes: np.ndarray                     # float32 (n, 4) normalised to the original frame (as the CSV gave them).
  view_boxes: np.ndarray | None = None  # float32 (n, 4) normalised to the model's input view.
  visible: np.ndarray | None = None     # float64 (n,) share of each box's area inside the view.
  scores: np.ndarray | None = None      # float32 (n, K) sigmoid scores; column i is action id i + 1.
  clip: np.ndarray | None = None        # uint8 (T, h, w, 3) the view, with predict_video(keep_clips=True).
  error: str | None = None


def load_keyframe(path: str, sec: int, boxes: np.ndarray, cfg, threads: int = 1) -> KeyframeResult:
  """Decodes the clip of keyframe `sec` from video file `path` and makes its test view with the boxes carried along
  (cfg: keyframe_config's); the result has no scores yet, or the decode error."""
  result = KeyframeResult(path, sec, boxes)
  try:
    clip = decode.decode_video(path, lambda n, fps: clip_indices(sec, n, fps, cfg), threads=threads)
  except decode.DecodeError as e:
    result.error = str(e)
    return result
  result.clip, result.view_boxes = ava_transforms.eval_clip(clip.frames, boxes, cfg)
  result.visible = visible_fraction(boxes, clip.frames.shape[1:3], cfg)
  return result


def predict_video(predictor, path: str, keyframes: dict[int, np.ndarray], *, start_sec: int = 0,
                  keep_clips: bool = False, threads: int = 1) -> Iterator[KeyframeResult]:
  """Each keyframe of video file `path` (second -> boxes (n, 4) normalised to the frame), seconds ascending, with
  its boxes' scores (clips of `predictor.batch_size` keyframes share a forward pass); `start_sec` is the AVA second
  at the video's time 0 (900 for AVA's 15-minute cuts). A keyframe whose clip cannot be read carries the error."""
  cfg = keyframe_config(predictor.data_config, start_sec)
  pending: list[KeyframeResult] = []

  def run():
    scores = predictor.detect(np.stack([r.clip for r in pending]), [r.view_boxes for r in pending])
    for result, clip_scores in zip(pending, scores):
      result.scores = clip_scores
      if not keep_clips:
        result.clip = None
    yield from pending
    pending.clear()

  for sec in sorted(keyframes):
    result = load_keyframe(path, sec, keyframes[sec], cfg, threads)
    if result.error:
      yield from run() if pending else ()
      yield result
      continue
    pending.append(result)
    if len(pending) == predictor.batch_size:
      yield from run()
  if pending:
    yield from run()


def top_actions(scores: np.ndarray, class_names: Sequence[str] | None, k: int) -> list[dict]:
  """The k highest of one box's scores (K,): [{'action', 'id' (1-based), 'score'}], highest first ('action' None
  when the card names no classes)."""
  order = np.argsort(-scores, kind='stable')[:k]
  return [{'action': None if class_names is None else class_names[i], 'id': int(i) + 1, 'score': float(scores[i])}
          for i in order]
