"""AVA action detection data in PySlowFast's layout (dataset_kind='ava'): keyframes with person boxes and their
multi-hot actions, and their clips from frame folders or from the video files.

  {ava_frame_dir}/{video}/{video}_{%06d}.jpg      frames at ava_fps, frame 0 at second ava_frame_start_sec (900)
  {ava_frame_list_dir}/train.csv, val.csv          `original_vido_id video_id frame_id path labels` (header line)
  {ava_video_dir}/{video}.mp4|.mkv|.webm           or the videos: time 0 at second ava_video_start_sec
  {ava_annotation_dir}/*.csv                       `video_id,sec,x1,y1,x2,y2,action_id,person_id_or_score`
                    /*.pbtxt                       label map (`item { name: "..." id: 3 }`)

As PySlowFast's ava_helper.py / ava_dataset.py do it: rows of the box files are merged per (video, second) by their
coordinate text, first seen first, each box collecting its action ids (an empty action is a box without a label);
training keyframes take the ground truth plus the detector proposals whose score is >= ava_detection_score_thresh,
test keyframes the detections with such a score. The IoU > 0.9 rule of the proposals is not applied by PySlowFast's
code: its proposal file (`person_box_67091280_iou90/..._include_negative_...csv`) already gives each detector box
the actions of a ground-truth box it overlaps with IoU > 0.9 and no action otherwise (`label_proposals` here writes
such files, e.g. for the synthetic data). Keyframes are the seconds in ava_valid_secs (902-1798) with at least one
box, video by video (frame list order, or sorted ids for videos), second by second. The clip of second `sec` is
`range(c - T*tau/2, c + T*tau/2, tau)` around frame c = (sec - ava_frame_start_sec) * ava_fps, clamped to the frames;
from a video file the same frames are the ones shown at those times (time 0 = ava_video_start_sec).
"""
from collections.abc import Sequence
import contextlib
import dataclasses
import functools
import gc
import math
import re

from absl import logging
import grain
import numpy as np

from mvit_jax.data import ava_transforms
from mvit_jax.data import decode
from mvit_jax.data import pipeline
from mvit_jax.data import shm_batch
from mvit_jax.system import storage
from mvit_jax.system.errors import InputError

VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm')  # What AVA's videos come as (PySlowFast DATASET.md).
NO_ACTION = -1  # Action id of a box row with an empty action column.


class AvaError(InputError):
  """An AVA annotation or frame list file that cannot be used; the message names the file and line."""


@dataclasses.dataclass(frozen=True, eq=False)
class Keyframe:
  video: str                           # AVA video id.
  sec: int                             # AVA timestamp (seconds).
  boxes: np.ndarray                    # float32 (n, 4) x1, y1, x2, y2 normalised to the original frame.
  actions: tuple[tuple[int, ...], ...]  # Per box, its 1-based action ids (empty: a box with no action).


def _resolve(folder: str, path: str) -> str:
  """`path` as it is when empty, a URL or absolute, else joined to `folder`."""
  if not path or not folder or storage.is_url(path) or path.startswith('/'):
    return path
  return storage.join(folder, path)


def _read_lines(path: str, what: str) -> list[str]:
  try:
    return storage.read_text(path).splitlines()
  except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
    raise AvaError(f'cannot read {what} {path!r}: {storage.describe_error(e)}') from None


# --- Label map ---------------------------------------------------------------------------------------------------

_LABEL_BLOCK = re.compile(r'(?:item|label)\s*\{([^}]*)\}')
_FIELD = re.compile(r'(\w+)\s*:\s*("(?:[^"\\]|\\.)*"|[^\s}]+)')


def read_label_map(path: str) -> dict[int, str]:
  """Action id -> name (in id order) of a label map pbtxt: `item { name: "..." id: N }` blocks (the ActivityNet
  lists) or `label { name: "..." label_id: N label_type: ... }` (ava_action_list_v2.2.pbtxt). A hand-written reader
  of these two flat text-protobuf messages: the protobuf schema is not published as a package."""
  text = '\n'.join(_read_lines(path, 'label map'))
  names = {}
  for block in _LABEL_BLOCK.finditer(text):
    fields = dict(_FIELD.findall(block.group(1)))
    ident = fields.get('id', fields.get('label_id'))
    if ident is None or 'name' not in fields or not ident.isdigit() or int(ident) < 1:
      raise AvaError(f'label map {path}: entry {" ".join(block.group(0).split())!r} needs a name and an id >= 1')
    if int(ident) in names:
      raise AvaError(f'label map {path}: class id {ident} appears twice')
    names[int(ident)] = fields['name'].strip('"')
  if not names:
    raise AvaError(f'label map {path} has no `item {{ name: "..." id: N }}` entries')
  return dict(sorted(names.items()))


def num_classes(label_map_path: str) -> int:
  """K = the largest action id of the label map: id i is column i - 1 of the multi-hot labels (AVA: 80)."""
  return max(read_label_map(label_map_path))


# --- Frame lists -------------------------------------------------------------------------------------------------

_NUMBERED = re.compile(r'^(.*?)(\d+)(\.\w+)$')


class FramePaths(Sequence):
  """The frame paths of one video in frame list order, kept as runs of numbered names (`{prefix}{n:06d}.jpg`,
  n consecutive): AVA's 6.3 M training frame paths would take gigabytes as Python strings in every worker."""

  def __init__(self, root: str = ''):
    self.root = root  # Frame paths are relative to it (as _resolve joins).
    self._runs = []  # [prefix, first number, digits, suffix, count] or [path, None, 0, '', 1].
    self._starts = [0]

  def append(self, path: str) -> None:
    if self._runs and self._runs[-1][1] is not None:  # The next name of the run: no regex (6.3 M lines).
      prefix, first, digits, suffix, count = self._runs[-1]
      if path == f'{prefix}{first + count:0{digits}d}{suffix}':
        self._runs[-1][4] += 1
        self._starts[-1] += 1
        return
    match = _NUMBERED.match(path)
    if match:
      prefix, digits, suffix = match.groups()
      self._runs.append([prefix, int(digits), len(digits), suffix, 1])
    else:
      self._runs.append([path, None, 0, '', 1])
    self._starts.append(self._starts[-1] + 1)

  def __len__(self) -> int:
    return self._starts[-1]

  def __getitem__(self, i: int) -> str:
    if not -len(self) <= i < len(self):
      raise IndexError(i)
    i %= len(self)
    r = int(np.searchsorted(self._starts, i, side='right')) - 1
    prefix, first, digits, suffix, _ = self._runs[r]
    return _resolve(self.root, prefix if first is None else f'{prefix}{first + i - self._starts[r]:0{digits}d}{suffix}')


def read_frame_lists(paths: Sequence[str], frame_dir: str) -> dict[str, FramePaths]:
  """Video id -> its frame paths (joined to `frame_dir`), videos in the order first seen (PySlowFast
  `load_image_lists`: a header line, then `original_vido_id video_id frame_id path labels` rows; frame j of a video
  is its j-th row)."""
  videos = {}
  for path in paths:
    try:
      with storage.open_file(path, 'r') as lines:  # Streamed: AVA's train list is 6.3 M lines.
        next(lines, None)
        for lineno, line in enumerate(lines, 2):
          row = line.split()
          if not row:
            continue
          if len(row) != 5:
            raise AvaError(f'{path}:{lineno}: expected `original_vido_id video_id frame_id path labels`, got '
                           f'{line.rstrip()!r}')
          frames = videos.get(row[0])
          if frames is None:
            frames = videos[row[0]] = FramePaths(frame_dir)
          frames.append(row[3])
    except AvaError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
      raise AvaError(f'cannot read frame list {path!r}: {storage.describe_error(e)}') from None
  return videos


# --- Box files ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class BoxRows:
  """The n rows of a box CSV, as columns (AVA's train files have millions of rows)."""
  video: list[str]
  sec: np.ndarray                      # int64 (n,)
  key: list[str]                       # The coordinates' text: boxes are merged by it (PySlowFast).
  box: np.ndarray                      # float64 (n, 4)
  action: np.ndarray                   # int64 (n,): 1-based, or NO_ACTION.
  score: np.ndarray                    # float64 (n,): detector score, or person id in ground truth (nan if absent).


def _parse_row(row: list[str], where: str) -> None:
  """Raises AvaError naming `where` when `row` is not a box row (the slow path that finds a bad row)."""
  if len(row) not in (7, 8):
    raise AvaError(f'{where}: expected `video_id,sec,x1,y1,x2,y2,action_id,person_id_or_score`, got '
                   f'{",".join(row)!r}')
  try:
    int(row[1])
    box = tuple(float(x) for x in row[2:6])
    action = NO_ACTION if row[6].strip() == '' else int(row[6])
    if len(row) == 8 and row[7].strip():
      float(row[7])
  except ValueError:
    raise AvaError(f'{where}: second, coordinates, action id or score is not a number: {",".join(row)!r}') from None
  if not all(map(math.isfinite, box)) or box[0] > box[2] or box[1] > box[3]:
    raise AvaError(f'{where}: box {box} is not x1 <= x2, y1 <= y2')
  if action != NO_ACTION and action < 1:
    raise AvaError(f'{where}: action id {action} must be >= 1 (empty: no action)')


def read_box_rows(path: str) -> BoxRows:
  """The rows of an AVA box CSV (`video_id,sec,x1,y1,x2,y2,action_id[,person_id_or_score]`), converted column by
  column; raises AvaError naming file and line for a row that is not one."""
  numbered = [(lineno, line.strip()) for lineno, line in enumerate(_read_lines(path, 'box file'), 1) if line.strip()]
  rows = [line.split(',') for _, line in numbered]
  try:
    if any(len(row) not in (7, 8) for row in rows):
      raise ValueError
    cols = list(zip(*(row if len(row) == 8 else row + [''] for row in rows))) or [()] * 8
    table = BoxRows(list(cols[0]), np.array(list(map(int, cols[1])), np.int64), [','.join(row[2:6]) for row in rows],
                    np.array([list(map(float, col)) for col in cols[2:6]], np.float64).T.reshape(-1, 4),
                    np.array([int(a) if a.strip() else NO_ACTION for a in cols[6]], np.int64),
                    np.array([float(x) if x.strip() else math.nan for x in cols[7]], np.float64))
    box = table.box
    if not (np.isfinite(box).all() and (box[:, 0] <= box[:, 2]).all() and (box[:, 1] <= box[:, 3]).all()
            and ((table.action == NO_ACTION) | (table.action >= 1)).all()):
      raise ValueError
  except ValueError:
    for (lineno, _), row in zip(numbered, rows):
      _parse_row(row, f'{path}:{lineno}')
    raise
  return table


def merge_boxes(files: Sequence[tuple[str, bool]], *, score_thresh: float,
                valid_secs: tuple[int, int]) -> dict[str, dict[int, list[tuple[tuple[float, ...], list[int]]]]]:
  """video -> sec -> [(box, action ids)] of box files given as (path, is_ground_truth) (PySlowFast
  `parse_bboxes_file`): rows of a non-ground-truth file with score < score_thresh are left out, so are seconds
  outside valid_secs (inclusive); rows with the same coordinate text at the same (video, sec) are one box whose
  action ids collect, in file order."""
  merged = {}
  for path, is_gt in files:
    rows = read_box_rows(path)
    keep = (rows.sec >= valid_secs[0]) & (rows.sec <= valid_secs[1])
    if not is_gt:
      keep &= rows.score >= score_thresh
    secs, boxes, actions = rows.sec.tolist(), rows.box.tolist(), rows.action.tolist()
    for i in np.flatnonzero(keep).tolist():
      entries = merged.setdefault(rows.video[i], {}).setdefault(secs[i], {})
      entry = entries.get(rows.key[i])
      if entry is None:
        entry = entries[rows.key[i]] = (tuple(boxes[i]), [])
      entry[1].append(actions[i])
  return {video: {sec: list(boxes.values()) for sec, boxes in secs.items()} for video, secs in merged.items()}


def keyframes_of(merged, video_order: Sequence[str]) -> list[Keyframe]:
  """Keyframes with at least one box, video by video in `video_order`, seconds ascending (PySlowFast
  `get_keyframe_data`)."""
  out = []
  for video in video_order:
    for sec in sorted(merged.get(video, {})):
      entries = merged[video][sec]
      if entries:
        boxes = np.array([box for box, _ in entries], np.float32).reshape(-1, 4)
        actions = tuple(tuple(dict.fromkeys(a for a in ids if a != NO_ACTION)) for _, ids in entries)
        out.append(Keyframe(video, sec, boxes, actions))
  return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU (n, m) of boxes a (n, 4) and b (m, 4), x1, y1, x2, y2 (continuous coordinates; zero-area boxes: 0)."""
  a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
  w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
  h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
  inter = w * h
  union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
           - inter)
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def label_proposals(proposals: np.ndarray, gt_boxes: np.ndarray, gt_actions: Sequence[Sequence[int]],
                    iou_thresh: float = 0.9) -> list[tuple[int, ...]]:
  """Actions of each detector box as AVA's `..._iou90/..._include_negative_...csv` files give them: those of the
  ground-truth box with the highest IoU when that IoU is > iou_thresh, none (a negative) otherwise."""
  if not len(gt_boxes):
    return [() for _ in proposals]
  iou = box_iou(proposals, gt_boxes)
  best = iou.argmax(1)
  return [tuple(gt_actions[j]) if iou[i, j] > iou_thresh else () for i, j in enumerate(best)]


# --- Clip frame indices ------------------------------------------------------------------------------------------


def clip_frame_indices(center: int, num_frames: int, sampling_rate: int, video_frames: int | None) -> np.ndarray:
  """PySlowFast `utils.get_sequence`: range(center - T*tau//2, center + T*tau//2, tau) clamped to [0, video_frames
  - 1] (no upper clamp when video_frames is None). int64 (T,)."""
  half = num_frames * sampling_rate // 2
  seq = np.arange(center - half, center + half, sampling_rate, dtype=np.int64)[:num_frames]
  return np.clip(seq, 0, None if video_frames is None else video_frames - 1)


def keyframe_center(sec: int, cfg) -> int:
  """Frame index of second `sec` in a frame folder: (sec - ava_frame_start_sec) * ava_fps (ava_helper)."""
  return int(round((sec - cfg.ava_frame_start_sec) * cfg.ava_fps))


def video_clip_indices(sec: int, num_video_frames: int, fps: float, cfg) -> np.ndarray:
  """Frame indices (T,) int64 of the clip of second `sec` in a video file at `fps` whose time 0 is second
  ava_video_start_sec: the frames shown at the times of the frame-folder clip (clip_frame_indices at ava_fps,
  clamped below at the folder's first frame), nearest frame, clamped to the video."""
  folder = clip_frame_indices(keyframe_center(sec, cfg), cfg.num_frames, cfg.sampling_rate, None)
  times = (cfg.ava_frame_start_sec - cfg.ava_video_start_sec) + folder / cfg.ava_fps
  return np.clip(np.floor(times * fps + 0.5), 0, num_video_frames - 1).astype(np.int64)


# --- Source ------------------------------------------------------------------------------------------------------


def _split_files(cfg, split: str) -> list[tuple[str, bool]]:
  """(box file, is ground truth) of a split, in PySlowFast's order (ground truth first)."""
  ann = cfg.ava_annotation_dir
  if split == 'train':
    files = [(_resolve(ann, cfg.ava_train_gt_boxes), True), (_resolve(ann, cfg.ava_train_proposals), False)]
  else:
    files = [(_resolve(ann, cfg.ava_val_detections), False)]
  files = [(path, is_gt) for path, is_gt in files if path]
  if not files:
    raise AvaError(f'data config has no box file for {split} (ava_train_gt_boxes / ava_train_proposals or '
                   'ava_val_detections)')
  return files


@contextlib.contextmanager
def _gc_paused():
  """Pauses Python's cyclic garbage collector: parsing AVA's millions of rows creates millions of lists and tuples,
  each batch of which would make it rescan the ones kept so far (4x the CPU of the parse, measured)."""
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


@functools.lru_cache(maxsize=8)
def _read_split(files: tuple, frame_lists: tuple, frame_dir: str, score_thresh: float, valid_secs: tuple,
                stamps: tuple):
  """(keyframes, frame paths per video or None) of a split, once per file version in this process."""
  del stamps
  with _gc_paused():
    frames = read_frame_lists(frame_lists, frame_dir) if frame_lists else None
    merged = merge_boxes(files, score_thresh=score_thresh, valid_secs=valid_secs)
    keyframes = keyframes_of(merged, list(frames) if frames is not None else sorted(merged))
  if frames is not None:
    unknown = sorted(set(merged) - set(frames))
    if unknown:
      raise AvaError(f'{", ".join(path for path, _ in files)}: video {unknown[0]} (and {len(unknown) - 1} more) not '
                     f'in the frame lists {", ".join(frame_lists)}')
  return keyframes, frames


def _version(path: str):
  try:
    return storage.version(path)
  except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
    raise AvaError(f'cannot read {path!r}: {storage.describe_error(e)}') from None


class AvaSource:
  """The keyframes of a split and their clips (frame folders or video files); random access by keyframe index.

  `load(i, short_side)` -> uint8 (T, H, W, 3) clip of keyframe i (short side scaled at decode when > 0);
  `describe(i)` names the frames or video and the second (for skip messages); `frame_size(i)` (H, W) of the
  keyframe's video from its first frame's header; raises decode.DecodeError for unreadable frames or videos.
  """

  def __init__(self, cfg, split: str, num_classes: int):
    if split not in ('train', 'eval'):
      raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if bool(cfg.ava_frame_dir) == bool(cfg.ava_video_dir):
      raise AvaError('data config needs exactly one of ava_frame_dir (frames) and ava_video_dir (videos)')
    self.cfg, self.num_classes = cfg, num_classes
    files = tuple(_split_files(cfg, split))
    frame_lists = ()
    if cfg.ava_frame_dir:
      frame_lists = (_resolve(cfg.ava_frame_list_dir, cfg.ava_frame_list_train if split == 'train'
                              else cfg.ava_frame_list_val),)
    stamps = tuple(_version(path) for path, _ in files) + tuple(_version(path) for path in frame_lists)
    self.keyframes, self._frames = _read_split(files, frame_lists, cfg.ava_frame_dir,
                                               float(cfg.ava_detection_score_thresh), tuple(cfg.ava_valid_secs),
                                               stamps)
    if not self.keyframes:
      raise AvaError(f'{", ".join(path for path, _ in files)}: no box in seconds {cfg.ava_valid_secs[0]}-'
                     f'{cfg.ava_valid_secs[1]} (ava_valid_secs)' + ('' if split == 'train' else
                                                                    f' with score >= {cfg.ava_detection_score_thresh}'))
    for keyframe in self.keyframes:
      for actions in keyframe.actions:
        if actions and max(actions) > num_classes:
          raise AvaError(f'{", ".join(path for path, _ in files)}: {keyframe.video} at second {keyframe.sec}: '
                         f'action id {max(actions)} outside [1, {num_classes}] (the label map\'s largest id)')
    self.remote = storage.is_url(cfg.ava_frame_dir or cfg.ava_video_dir)
    self._video_files = None
    self._sizes = {}
    counts = np.array([len(k.boxes) for k in self.keyframes])
    self.dropped_boxes = int(np.maximum(counts - cfg.ava_max_boxes, 0).sum()) if len(counts) else 0
    self.crowded_keyframes = int((counts > cfg.ava_max_boxes).sum()) if len(counts) else 0

  def __getstate__(self):
    return {**self.__dict__, '_sizes': {}}

  def __len__(self) -> int:
    return len(self.keyframes)

  def describe(self, i: int) -> str:
    keyframe = self.keyframes[i]
    return f'{self._location(keyframe.video)} at second {keyframe.sec}'

  def _location(self, video: str) -> str:
    if self._frames is not None:
      return storage.parent(self._frames[video][0]) if len(self._frames[video]) else video
    return self._video_path(video)

  def _video_path(self, video: str) -> str:
    """{ava_video_dir}/{video}{ext}: the directory is listed once (per process) to find the extension."""
    if self._video_files is None:
      try:
        names = storage.listdir(self.cfg.ava_video_dir)
      except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
        raise decode.DecodeError(f'cannot list {self.cfg.ava_video_dir}: {storage.describe_error(e)}') from None
      self._video_files = {}
      for name in sorted(names):
        stem, dot, ext = name.rpartition('.')
        if dot and '.' + ext.lower() in VIDEO_EXTENSIONS:
          self._video_files.setdefault(stem, name)
    name = self._video_files.get(video, video + VIDEO_EXTENSIONS[0])
    return storage.join(self.cfg.ava_video_dir, name)

  def clip_indices(self, sec: int, video_frames: int | None) -> np.ndarray:
    """Frame-folder indices (T,) of the clip centred on `sec`."""
    cfg = self.cfg
    return clip_frame_indices(keyframe_center(sec, cfg), cfg.num_frames, cfg.sampling_rate, video_frames)

  def load(self, i: int, short_side: int = 0) -> np.ndarray:
    keyframe, cfg = self.keyframes[i], self.cfg
    if self._frames is not None:
      files = self._frames[keyframe.video]
      clip = decode.decode_frame_files(files, lambda n, fps: self.clip_indices(keyframe.sec, n), fps=cfg.ava_fps,
                                       short_side=short_side)
      return clip.frames
    return decode.decode_video(self._video_path(keyframe.video),
                               lambda n, fps: video_clip_indices(keyframe.sec, n, fps, cfg), short_side=short_side,
                               threads=cfg.decode_threads).frames

  def frame_size(self, i: int) -> tuple[int, int]:
    """(H, W) of keyframe i's video, from the first frame's header (cached per video)."""
    video = self.keyframes[i].video
    if video not in self._sizes:
      if self._frames is not None:
        self._sizes[video] = decode.image_size(self._frames[video][0])
      else:
        clip = decode.decode_video(self._video_path(video), lambda n, fps: np.array([0]))
        self._sizes[video] = clip.frames.shape[1:3]
    return self._sizes[video]

  def multi_hot(self, i: int) -> np.ndarray:
    """float32 (n, K) labels of keyframe i's boxes: action id a -> column a - 1."""
    actions = self.keyframes[i].actions
    hot = np.zeros((len(actions), self.num_classes), np.float32)
    for row, ids in enumerate(actions):
      hot[row, [a - 1 for a in ids]] = 1.0
    return hot


def num_classes_from_config(cfg) -> int:
  """cfg.num_classes if set, else the label map's largest id."""
  if cfg.num_classes:
    return cfg.num_classes
  if not cfg.ava_label_map:
    raise AvaError('data config needs num_classes or ava_label_map (dataset_kind ava)')
  return num_classes(_resolve(cfg.ava_annotation_dir, cfg.ava_label_map))


def class_names_from_config(cfg) -> list[str]:
  """Column i's name: the label map's name of action id i + 1 ('action N' for an id the map leaves out)."""
  names = read_label_map(annotation_path(cfg, 'ava_label_map'))
  return [names.get(i + 1, f'action {i + 1}') for i in range(num_classes_from_config(cfg))]


def annotation_path(cfg, key: str) -> str:
  """The path of annotation key `key` (e.g. 'ava_val_gt', 'ava_label_map', 'ava_exclusions') as the loaders read
  it: relative names joined to ava_annotation_dir; '' when the key is empty."""
  return _resolve(cfg.ava_annotation_dir, cfg[key])


def keyframe_list(cfg, split: str = 'eval') -> list[tuple[str, int]]:
  """(video id, second) of every keyframe of `split`, in source order: eval batches' `keyframe_index` indexes it."""
  return [(k.video, k.sec) for k in AvaSource(cfg, split, num_classes_from_config(cfg)).keyframes]


# --- Loaders -----------------------------------------------------------------------------------------------------
# The grain machinery of data/pipeline.py (global shuffle, sharding, workers, failure accounting, exact resume),
# over keyframes instead of videos: a keyframe whose frames or video cannot be read is replaced (train) or masked
# (eval) and counted, with max_failure_fraction a fraction of this process's keyframes.


def _padded(boxes: np.ndarray, labels: np.ndarray, max_boxes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The first max_boxes boxes (n, 4) and labels (n, K) padded with zeros to N = max_boxes: (boxes (N, 4) float32,
  box_mask (N,) bool, labels (N, K) float32)."""
  n = min(len(boxes), max_boxes)
  out_boxes = np.zeros((max_boxes, 4), np.float32)
  out_labels = np.zeros((max_boxes, labels.shape[1]), np.float32)
  out_boxes[:n], out_labels[:n] = boxes[:n], labels[:n]
  return out_boxes, np.arange(max_boxes) < n, out_labels


class _TrainExample(grain.transforms.RandomMap):
  """Keyframe index -> {'video': uint8 (T, crop, crop, 3), 'boxes': (N, 4), 'box_mask': (N,), 'labels': (N, K),
  _FAILED: int32 (max_replacement_attempts,)}; a keyframe whose clip cannot be read is replaced by a random one
  (drawn from the element's RNG), at most max_replacement_attempts times."""

  def __init__(self, source: AvaSource, cfg):
    self.source, self.cfg = source, cfg

  def random_map(self, index, rng: np.random.Generator):
    cfg = self.cfg
    frames, index, failed = pipeline.load_or_replace(
        self.source, int(index), rng, cfg.max_replacement_attempts,
        lambda i: self.source.load(i, cfg.train_short_side), what='keyframes')
    keyframe = self.source.keyframes[index]
    video, boxes = ava_transforms.train_clip(frames, keyframe.boxes[:cfg.ava_max_boxes], rng, cfg)
    boxes, box_mask, labels = _padded(boxes, self.source.multi_hot(index), cfg.ava_max_boxes)
    return {'video': video, 'boxes': boxes, 'box_mask': box_mask, 'labels': labels,
            pipeline._FAILED: failed}


class _EvalExample(grain.transforms.Map):
  """Row -> {'video': uint8 (T, h, w, 3), 'boxes', 'box_mask', 'labels', 'keyframe_index': int32, 'original_boxes':
  (N, 4), 'mask': bool, _FAILED: int32 (1,)}. `rows[r]` is the keyframe of row r or -1 (padding); `shape_rows[r]`
  a keyframe whose video gives a padding or failed row its frame size ('full' view; -1: crop x crop)."""

  def __init__(self, source: AvaSource, cfg, rows: np.ndarray, shape_rows: np.ndarray):
    self.source, self.cfg, self.rows, self.shape_rows = source, cfg, rows, shape_rows

  def _masked_row(self, row: int, keyframe_index: int = -1, failed: int = pipeline._NOT_FAILED):
    cfg, shape = self.cfg, (self.cfg.crop_size, self.cfg.crop_size)
    if self.shape_rows[row] >= 0:
      try:
        shape = ava_transforms.eval_shape(*self.source.frame_size(int(self.shape_rows[row])), cfg)
      except decode.DecodeError:
        pass  # The whole video is unreadable: every row of its batches is crop x crop.
    n, k = cfg.ava_max_boxes, self.source.num_classes
    return {'video': np.zeros((cfg.num_frames, *shape, 3), np.uint8), 'boxes': np.zeros((n, 4), np.float32),
            'box_mask': np.zeros(n, bool), 'labels': np.zeros((n, k), np.float32),
            'keyframe_index': np.int32(keyframe_index), 'original_boxes': np.zeros((n, 4), np.float32),
            'mask': np.bool_(False), pipeline._FAILED: np.array([failed], np.int32)}

  def map(self, row):
    cfg, row = self.cfg, int(row)
    index = int(self.rows[row])
    if index < 0:
      return self._masked_row(row)
    try:
      if self.shape_rows[row] >= 0:  # 'full': the video's size, read for every row, so all rows of a video agree.
        self.source.frame_size(index)
      frames = self.source.load(index)
    except decode.DecodeError as e:
      pipeline._log_decode_error(self.source.describe(index), e)
      return self._masked_row(row, index, failed=index)
    original = self.source.keyframes[index].boxes[:cfg.ava_max_boxes]
    video, boxes = ava_transforms.eval_clip(frames, original, cfg)
    boxes, box_mask, labels = _padded(boxes, self.source.multi_hot(index), cfg.ava_max_boxes)
    original_boxes = np.zeros_like(boxes)
    original_boxes[:len(original)] = original
    return {'video': video, 'boxes': boxes, 'box_mask': box_mask, 'labels': labels,
            'keyframe_index': np.int32(index), 'original_boxes': original_boxes, 'mask': np.bool_(True),
            pipeline._FAILED: np.array([pipeline._NOT_FAILED], np.int32)}


def _warn_crowded(source: AvaSource, cfg) -> None:
  if source.dropped_boxes:
    logging.warning('%d keyframes have more than ava_max_boxes=%d boxes: their %d boxes beyond the first %d (ground '
                    'truth first, then proposals as the files list them) are left out', source.crowded_keyframes,
                    cfg.ava_max_boxes, source.dropped_boxes, cfg.ava_max_boxes)


def make_ava_train_iterator(data_config, *, num_classes: int, global_batch_size: int, seed: int,
                            process_index: int | None = None,
                            process_count: int | None = None) -> grain.DatasetIterator:
  """Infinite iterator of {'video': uint8 (B, T, crop, crop, 3), 'boxes': float32 (B, N, 4) normalised to the crop,
  'box_mask': bool (B, N), 'labels': float32 (B, N, K) multi-hot (action id i -> column i - 1)}, N = ava_max_boxes,
  K = `num_classes` (num_classes_from_config's answer).

  B = global_batch_size // process_count keyframes. Each process reads a disjoint 1/process_count of the training
  keyframes, reshuffled every epoch from `seed`; get_state()/set_state() resume exactly (as
  pipeline.make_train_iterator). Videos are cropped and flipped, not normalised (the train step does that).
  """
  cfg = data_config
  process_index, process_count = pipeline._process_info(process_index, process_count)
  local_batch = pipeline._local_batch_size(global_batch_size, process_count)
  source = AvaSource(cfg, 'train', num_classes)
  _warn_crowded(source, cfg)
  ds = pipeline.train_index_dataset(len(source), seed=seed, process_index=process_index, process_count=process_count)
  num_local = len(ds)
  ds = (ds.repeat(None)
        .random_map(_TrainExample(source, cfg))
        .batch(local_batch, drop_remainder=True, batch_fn=shm_batch.stack))
  return iter(pipeline._finish(ds, cfg, source, num_local))


def eval_rows(videos: Sequence[str], local_batch: int, process_index: int, process_count: int, *,
              by_video: bool) -> tuple[np.ndarray, np.ndarray]:
  """(keyframe index or -1, keyframe giving a padding row its frame size or -1), int64 (num_batches * local_batch,)
  each, of this process's eval rows; `videos[i]` is keyframe i's video (keyframes of a video adjacent).

  Every process gets the same number of rows. Without by_video, process p takes keyframes p, p + P, ...; with it
  (the 'full' view, whose frame size is the video's), the keyframes of each video are padded to whole global
  batches, so that every global batch holds one video, and process p takes the p-th 1/P of each global batch.
  """
  n = len(videos)
  if not by_video:
    local = np.arange(process_index, n, process_count)
    num_batches = math.ceil(math.ceil(n / process_count) / local_batch)
    rows = np.full(num_batches * local_batch, -1, np.int64)
    rows[:len(local)] = local
    return rows, np.full_like(rows, -1)
  global_batch = local_batch * process_count
  rows, shapes = [], []
  start = 0
  while start < n:
    end = start
    while end < n and videos[end] == videos[start]:
      end += 1
    size = math.ceil((end - start) / global_batch) * global_batch
    rows.append(np.concatenate([np.arange(start, end), np.full(size - (end - start), -1)]))
    shapes.append(np.full(size, start))
    start = end
  rows = np.concatenate(rows or [np.zeros(0, np.int64)]).reshape(-1, process_count, local_batch)
  shapes = np.concatenate(shapes or [np.zeros(0, np.int64)]).reshape(-1, process_count, local_batch)
  return rows[:, process_index].reshape(-1), shapes[:, process_index].reshape(-1)


def make_ava_eval_iterator(data_config, *, num_classes: int, global_batch_size: int,
                           process_index: int | None = None,
                           process_count: int | None = None) -> grain.DatasetIterator:
  """Finite iterator over every eval keyframe of this process, once: {'video': uint8 (B, T, h, w, 3), 'boxes':
  float32 (B, N, 4) normalised to the view, 'box_mask': bool (B, N), 'labels': float32 (B, N, K) (what the
  detections file gives its boxes), 'keyframe_index': int32 (B,) (into keyframe_list(cfg)), 'original_boxes':
  float32 (B, N, 4) normalised to the original frame, 'mask': bool (B,) (False: padding, or a keyframe whose clip
  could not be read)}. Views (ava_test_view): 'center' h = w = crop_size; 'full' the whole frame with its short side
  at crop_size, every batch (all processes' together) from one video. Every process yields the same number of
  batches. Close the iterator when done: it owns worker processes.
  """
  cfg = data_config
  process_index, process_count = pipeline._process_info(process_index, process_count)
  local_batch = pipeline._local_batch_size(global_batch_size, process_count)
  ava_transforms.eval_shape(1, 1, cfg)  # Checks ava_test_view before any worker starts.
  source = AvaSource(cfg, 'eval', num_classes)
  _warn_crowded(source, cfg)
  rows, shape_rows = eval_rows([k.video for k in source.keyframes], local_batch, process_index, process_count,
                               by_video=cfg.ava_test_view == 'full')
  ds = (grain.MapDataset.range(len(rows))
        .map(_EvalExample(source, cfg, rows, shape_rows))
        .batch(local_batch, batch_fn=shm_batch.stack))
  return iter(pipeline._finish(ds, cfg, source, max(1, int((rows >= 0).sum()))))
