r"""AVA frame-level mAP: PASCAL VOC average precision at IoU 0.5 per action class, as PySlowFast scores AVA.

    python -m mvit_jax.ava_eval --labelmap F --groundtruth F --detections F [--exclusions F]
        [--max_detections_per_frame N]

prints the mAP and the per-class APs: stdout holds one JSON line (for tools)

    {"mAP": 0.2451, "per_class_AP": {"1": 0.31, ...}, "class_names": {"1": "bend/bow (at the waist)", ...},
     "no_groundtruth": [2, 16], "groundtruth_rows": 50123, "detection_rows": 4010040, "frames": 15380,
     "max_detections_per_frame": null}

(APs as fractions, keys the label map's class ids as strings) and stderr a table for people; bad input (a missing
file, a malformed row, an unknown class id) is one line on stderr and exit status 2. Every path may be local or a
bucket URL (gs://...).

The files are the AVA / ActivityNet ones:
  labelmap      pbtxt of `item { name: "..." id: N }` (the ActivityNet lists, e.g. the 60 classes of
                ava_action_list_v2.1_for_activitynet_2018.pbtxt) or `label { name: "..." label_id: N label_type: ... }`
                (ava_action_list_v2.2.pbtxt): the classes scored.
  groundtruth   CSV `video_id,sec,x1,y1,x2,y2,action_id[,person_id]`: one row per (person box, action).
  detections    CSV `video_id,sec,x1,y1,x2,y2,action_id,score`: one row per (box, action); PySlowFast writes every
                detected box with every class of the label map, no NMS.
  exclusions    CSV `video_id,sec`: keyframes left out of both.
Boxes are normalised to [0, 1] of the frame; `sec` is an integer: a keyframe is (video_id, int(sec)), the key the
reference scorer formats as '%s,%04d'.

The rules are those of PySlowFast's scorer (slowfast/utils/ava_eval_helper.py over its copy of the TensorFlow
object detection evaluation), which made the MViT papers' numbers; tests/train/test_ava_eval.py checks them against
it, mAP and every AP within 1e-6:
- Rows whose class is not in the label map are skipped (the AVA files hold 80 classes, the ActivityNet list 60, and
  a label map may name any subset). A class id below 1, or a detection's above every id of the label map and the
  ground truth (no class of the data set: a model or file of another data set), is bad input.
- Rows of excluded keyframes are skipped, in the ground truth and in the detections.
- A detection box with x2 <= x1 or y2 <= y1 is dropped (it cannot overlap anything); a ground-truth box with
  x2 < x1 or y2 < y1 is bad input.
- Per keyframe and class, each detection takes the ground-truth box it overlaps most (IoU; the first of equals in
  file order). It is a true positive when that IoU is >= 0.5 and no earlier detection took that box, else a false
  positive (also when the box was taken: it does not fall back to its second best). "Earlier" is file order:
  PySlowFast's scorer does not sort a frame's detections by score.
- Per class, the detections of all keyframes are ranked by score; precision is made non-increasing from the right
  (all-point interpolation) and AP is its mean over the class's ground-truth boxes (a box never found adds 0).
  Tied scores are ranked as the reference ranks them: the detections in keyframe order (keyframes in the order of
  their first detection row) then file order, reversed after numpy's default argsort. A class with ground truth
  but no detections has AP 0.
- The mAP is the mean over the label map's classes that have ground truth (after exclusions). A class without
  ground truth has no AP (the reference reports NaN for it and takes the mean of the others); it is listed under
  "no_groundtruth".

--max_detections_per_frame N (default: all, PySlowFast's rule and the papers'; 50 is the ActivityNet challenge's,
its get_ava_performance.py) keeps per keyframe the N detections that get_ava_performance.py's heap keeps: the N
highest scores; at a tie on the N-th score, the tied rows among the first N rows (file order) that score at least
that much, and of those the ones whose (score, class id, y1, x1, y2, x2) is largest. A frame's kept detections then
claim ground truth in descending score order (ties: file order), as that scorer passes them on. It differs from
that scorer (ActivityNet's, as of its 2019 cap) only where the order is arbitrary: its order among equal scores is
its heap's internal layout, and it also reorders a keyframe's ground truth by descending person id, which matters
only to a detection that overlaps two boxes of its class exactly equally.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import csv
import io
import json
import math
import sys
from typing import NamedTuple

from absl import flags
import numpy as np

from mvit_jax.data import ava
from mvit_jax.system import storage
from mvit_jax.system.errors import did_you_mean_path
from mvit_jax.system.errors import InputError

FLAGS = flags.FLAGS
IOU_THRESHOLD = 0.5
CHALLENGE_MAX_DETECTIONS = 50  # get_ava_performance.py's cap per keyframe.


class BoxRows(NamedTuple):
  """Rows of an AVA box CSV as arrays, one row per (box, action), N rows in file order."""
  videos: np.ndarray   # (N,) str: video ids.
  seconds: np.ndarray  # (N,) int64: keyframe timestamps (s).
  boxes: np.ndarray    # (N, 4) float64: x1, y1, x2, y2 normalised to the frame.
  labels: np.ndarray   # (N,) int64: 1-based action ids.
  scores: np.ndarray   # (N,) float64: detection scores (1 for ground truth).


def box_rows(videos, seconds, boxes, labels, scores=None) -> BoxRows:
  """BoxRows from array-likes (scores default to 1, as ground truth has)."""
  videos = np.asarray(videos, dtype=str)
  boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
  scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, dtype=np.float64)
  return BoxRows(videos, np.asarray(seconds, dtype=np.int64), boxes, np.asarray(labels, dtype=np.int64), scores)


def detection_rows(videos, seconds, boxes, scores, class_ids: Iterable[int]) -> BoxRows:
  """Every box with every class of `class_ids`, as PySlowFast's evaluation writes them (box after box, classes
  ascending within a box). videos (M,) str, seconds (M,) int, boxes (M, 4) x1, y1, x2, y2 normalised to the
  original frame, scores (M, K) with class id i in column i - 1."""
  ids = np.array(sorted(set(int(i) for i in class_ids)), dtype=np.int64)
  scores = np.asarray(scores)
  if len(ids) and (ids[0] < 1 or ids[-1] > scores.shape[1]):
    raise InputError(f'class ids {ids[0]}..{ids[-1]} do not fit scores with {scores.shape[1]} columns')
  m, k = len(scores), len(ids)
  return box_rows(np.repeat(np.asarray(videos, dtype=str), k), np.repeat(np.asarray(seconds), k),
                  np.repeat(np.asarray(boxes, np.float64).reshape(-1, 4), k, axis=0), np.tile(ids, m),
                  scores[:, ids - 1].reshape(-1))


# --- Reading the files -------------------------------------------------------------------------------------------



def _read_bytes(path: str, what: str) -> bytes:
  if not storage.isfile(path):
    raise InputError(f'{what}: no such file {path!r}{did_you_mean_path(path)}')
  try:
    return storage.read_bytes(path)
  except OSError as e:
    raise InputError(f'{what} {path}: cannot read: {storage.describe_error(e)}') from None


def _decode(data: bytes, path: str, what: str) -> str:
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise InputError(f'{what} {path}: not UTF-8 text ({e.reason} at byte {e.start})') from None


def _read_text(path: str, what: str) -> str:
  return _decode(_read_bytes(path, what), path, what)


def read_labelmap(path: str) -> tuple[dict[int, str], list[int]]:
  """({class id: name} in id order, the ids ascending) of a label map pbtxt (`mvit_jax.data.ava.read_label_map`)."""
  names = ava.read_label_map(path)
  return names, list(names)


def _rows_fast(data: bytes, columns: Sequence[int]) -> np.ndarray | None:
  """The rows as a structured (N,) array (video bytes, sec, x1, y1, x2, y2, label[, extra]) read in one pass by
  numpy's C reader, or None when the file needs the line-by-line reader: blank or quoted lines, a carriage return
  not followed by a newline, a line whose column count differs from the first's or is not one of `columns`, a value
  that does not parse."""
  data = data.replace(b'\r\n', b'\n')
  if not data.strip() or b'"' in data or b'\r' in data:
    return None
  buffer = np.frombuffer(data, np.uint8)
  ends = np.flatnonzero(buffer == ord('\n'))
  if data[-1:] != b'\n':
    ends = np.append(ends, len(buffer))
  starts = np.concatenate([[0], ends[:-1] + 1])
  commas = np.flatnonzero(buffer == ord(','))
  first_comma = np.searchsorted(commas, starts)
  per_line = np.searchsorted(commas, ends) - first_comma
  width = int(per_line[0]) + 1
  if (ends == starts).any() or width not in columns or (per_line != width - 1).any():
    return None
  video_bytes = int((commas[first_comma] - starts).max())
  numeric = [('sec', np.int64), ('x1', np.float64), ('y1', np.float64), ('x2', np.float64), ('y2', np.float64),
             ('label', np.int64)] + [('extra', np.float64)] * (width == 8)
  try:
    # latin-1 maps each byte to one character: the video field holds the id's UTF-8 bytes as they are.
    return np.loadtxt(io.BytesIO(data), delimiter=',', dtype=[('video', f'S{max(video_bytes, 1)}')] + numeric,
                      comments=None, encoding='latin-1', ndmin=1)
  except ValueError:
    return None


def _rows_slow(text: str, where: str, columns: Sequence[int], scored: bool) -> tuple[BoxRows, np.ndarray]:
  """The rows and their 1-based line numbers, line by line (csv module): the first bad line raises InputError."""
  videos, seconds, boxes, labels, scores, line_numbers = [], [], [], [], [], []
  for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
    if not row or (len(row) == 1 and not row[0].strip()):
      continue
    if len(row) not in columns:
      raise InputError(f'{where} line {number}: {len(row)} columns, expected {" or ".join(map(str, columns))} '
                       f'(video_id,sec,x1,y1,x2,y2,action_id{",score" if scored else "[,person_id]"})')
    for name, value in (('sec', row[1]), ('action_id', row[6])):
      try:
        int(value)
      except ValueError:
        raise InputError(f'{where} line {number}: {name} {value!r} is not an integer') from None
    numbers = row[2:6] + row[7:8] * scored
    try:
      numbers = [float(v) for v in numbers]
    except ValueError:
      raise InputError(f'{where} line {number}: {",".join(numbers)!r} are not all numbers') from None
    videos.append(row[0])
    seconds.append(int(row[1]))
    labels.append(int(row[6]))
    boxes.append(numbers[:4])
    scores.append(numbers[4] if scored else 1.0)
    line_numbers.append(number)
  return box_rows(videos, seconds, np.array(boxes, np.float64).reshape(-1, 4), labels, scores), np.array(line_numbers)


def _read_box_csv(path: str, what: str, columns: tuple[int, ...], class_ids: Iterable[int] | None) -> BoxRows:
  data = _read_bytes(path, what)
  scored = columns == (8,)
  values = _rows_fast(data, columns)
  if values is not None:
    try:
      videos = values['video'].astype(str)  # ASCII, the common case: fast.
    except UnicodeDecodeError:
      videos = np.char.decode(values['video'], 'utf-8')
    # Copies, not views: the structured array (most of the file's size again) is freed.
    rows = BoxRows(videos, values['sec'].copy(), np.stack([values[k] for k in ('x1', 'y1', 'x2', 'y2')], axis=1),
                   values['label'].copy(), values['extra'].copy() if scored else np.ones(len(values)))
    line_numbers = np.arange(1, len(values) + 1)
  else:
    rows, line_numbers = _rows_slow(_decode(data, path, what), f'{what} {path}', columns, scored)
  _check_rows(rows, f'{what} {path}', class_ids, groundtruth=not scored, line_numbers=line_numbers)
  return rows


def read_groundtruth(path: str, class_ids: Iterable[int] | None = None) -> BoxRows:
  """Rows of a ground-truth CSV `video_id,sec,x1,y1,x2,y2,action_id[,person_id]` (the person id is not used). An
  action id below 1 is bad input, and with class_ids (the ids known) one above max(class_ids)."""
  return _read_box_csv(path, 'groundtruth', (7, 8), class_ids)


def read_detections(path: str, class_ids: Iterable[int] | None = None) -> BoxRows:
  """Rows of a detections CSV `video_id,sec,x1,y1,x2,y2,action_id,score` (an empty file has none). An action id
  below 1 is bad input, and with class_ids (the ids known) one above max(class_ids)."""
  return _read_box_csv(path, 'detections', (8,), class_ids)


def read_exclusions(path: str) -> set[tuple[str, int]]:
  """The (video id, second) keyframes of an exclusions CSV `video_id,sec`."""
  text = _read_text(path, 'exclusions')
  excluded = set()
  for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
    if not row or (len(row) == 1 and not row[0].strip()):
      continue
    if len(row) != 2:
      raise InputError(f'exclusions {path} line {number}: {len(row)} columns, expected 2 (video_id,sec)')
    try:
      excluded.add((row[0], int(row[1])))
    except ValueError:
      raise InputError(f'exclusions {path} line {number}: sec {row[1]!r} is not an integer') from None
  return excluded


def _check_rows(rows: BoxRows, where: str, class_ids: Iterable[int] | None, groundtruth: bool,
                line_numbers: np.ndarray | None = None) -> None:
  """InputError naming the first row (its line when line_numbers are given) with a non-finite value, a class id
  below 1 (or with class_ids above max(class_ids)), or a ground-truth box with x2 < x1 or y2 < y1."""
  checks = [(~np.isfinite(rows.boxes).all(axis=1) | ~np.isfinite(rows.scores), 'a value is not finite'),
            (rows.labels < 1, 'class id below 1 (ids are 1-based)')]
  if groundtruth:
    checks.append(((rows.boxes[:, 2] < rows.boxes[:, 0]) | (rows.boxes[:, 3] < rows.boxes[:, 1]),
                   'box with x2 < x1 or y2 < y1'))
  if class_ids is not None:
    largest = max(class_ids)
    checks.append((rows.labels > largest, f'unknown class id (known: 1..{largest})'))
  for bad, problem in checks:
    if bad.any():
      i = int(np.argmax(bad))
      row = (f'line {line_numbers[i]}' if line_numbers is not None else f'row {i}')
      shown = f'{rows.videos[i]},{rows.seconds[i]},{",".join(map(repr, rows.boxes[i].tolist()))},{rows.labels[i]}'
      raise InputError(f'{where} {row}: {problem} ({shown})')


# --- Writing detections ------------------------------------------------------------------------------------------

def _shortest(values: np.ndarray) -> np.ndarray:
  """Decimal text of float32 values, the shortest that reads back as the same float32: no rounding adds ties."""
  return np.asarray(values, dtype=np.float32).astype(str)


def write_detections(path: str, rows: BoxRows) -> BoxRows:
  """Writes rows as a detections CSV (`video_id,sec,x1,y1,x2,y2,action_id,score`, sec as '%04d', boxes and scores
  as the shortest decimals of their float32 values) and returns the rows as `read_detections` reads them back, so
  that a score of them in memory is the number `python -m mvit_jax.ava_eval` prints for the file. Rows of one box
  share its text: each distinct (video, sec, box) run is formatted once."""
  n = len(rows.labels)
  change = np.ones(n, dtype=bool)
  change[1:] = ((rows.videos[1:] != rows.videos[:-1]) | (rows.seconds[1:] != rows.seconds[:-1])
                | (rows.boxes[1:] != rows.boxes[:-1]).any(axis=1))
  run = np.cumsum(change) - 1
  heads = np.flatnonzero(change)
  box_text = _shortest(rows.boxes[heads])
  prefixes = [f'{v},{s:04d},{b[0]},{b[1]},{b[2]},{b[3]},' for v, s, b in
              zip(rows.videos[heads].tolist(), rows.seconds[heads].tolist(), box_text.tolist())]
  score_text = _shortest(rows.scores)
  label_text = rows.labels.astype(str).tolist()
  prefix_of_row = np.asarray(prefixes, dtype=object)[run] if n else []
  text = ''.join(f'{p}{c},{s}\n' for p, c, s in zip(prefix_of_row, label_text, score_text.tolist()))
  storage.write_text(path, text)
  return BoxRows(rows.videos, rows.seconds, box_text.astype(np.float64)[run] if n else np.zeros((0, 4)),
                 rows.labels, score_text.astype(np.float64))


# --- Scoring -----------------------------------------------------------------------------------------------------

def _run_starts(rows: BoxRows) -> np.ndarray:
  """(N,) bool: True where a row's (video, sec) differs from the row before (files keep a keyframe's rows together,
  so the keyframes are found among few run starts instead of sorting N strings)."""
  change = np.ones(len(rows.labels), dtype=bool)
  change[1:] = (rows.videos[1:] != rows.videos[:-1]) | (rows.seconds[1:] != rows.seconds[:-1])
  return change


def _frame_codes(row_sets: Sequence[BoxRows], keys: Iterable[tuple[str, int]]
                 ) -> tuple[list[np.ndarray], np.ndarray]:
  """(per row set an (N,) int64 keyframe code shared across the sets, the codes of `keys` that occur)."""
  starts = [_run_starts(rows) for rows in row_sets]
  head_videos = np.concatenate([rows.videos[s] for rows, s in zip(row_sets, starts)] + [np.zeros(0, str)])
  head_seconds = np.concatenate([rows.seconds[s] for rows, s in zip(row_sets, starts)] + [np.zeros(0, np.int64)])
  names, video_code = np.unique(head_videos, return_inverse=True)
  frames, frame_code = np.unique(np.stack([video_code.astype(np.int64), head_seconds], axis=1), axis=0,
                                 return_inverse=True)
  frame_code = frame_code.reshape(-1)
  codes, offset = [], 0
  for s in starts:
    heads = int(s.sum())
    codes.append(frame_code[offset:offset + heads][np.cumsum(s) - 1])
    offset += heads
  lookup = {(str(names[v]), int(sec)): i for i, (v, sec) in enumerate(frames.tolist())}
  key_codes = np.array(sorted({lookup[k] for k in keys if k in lookup}), dtype=np.int64)
  return codes, key_codes


def _rank_within(groups: np.ndarray, order: np.ndarray) -> np.ndarray:
  """(N,) int64: each row's position within its group when rows are visited in `order` (a permutation)."""
  ranks = np.empty(len(groups), dtype=np.int64)
  g = groups[order]
  start = np.ones(len(g), dtype=bool)
  start[1:] = g[1:] != g[:-1]
  first = np.maximum.accumulate(np.where(start, np.arange(len(g)), 0))
  ranks[order] = np.arange(len(g)) - first
  return ranks


def _heap_keep(frames: np.ndarray, scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray, cap: int
               ) -> np.ndarray:
  """(N,) bool: the rows get_ava_performance.py's per-keyframe heap of `cap` keeps. That heap admits a row while it
  holds fewer than cap, or when the row scores more than its smallest (score, class, y1, x1, y2, x2) entry, which it
  evicts. So every row scoring above the frame's cap-th highest score s stays; a row scoring s enters only while
  fewer than cap earlier rows score >= s, and the entered rows scoring s leave smallest tuple first."""
  n = len(frames)
  by_score = np.lexsort((-scores, frames))
  rank = _rank_within(frames, by_score)
  counts = np.bincount(frames, minlength=int(frames.max(initial=-1)) + 1)
  big = counts[frames] > cap
  threshold = np.full(int(counts.size), -np.inf)
  at_cap = by_score[(rank[by_score] == cap - 1) & big[by_score]]
  threshold[frames[at_cap]] = scores[at_cap]
  s = threshold[frames]
  above = scores > s
  contenders = np.where(big & (scores >= s), frames, -1)
  arrival = _rank_within(contenders, np.lexsort((np.arange(n), contenders)))
  entered = big & (scores == s) & (arrival < cap)
  room = cap - np.bincount(frames[big & above], minlength=counts.size)
  x1, y1, x2, y2 = boxes.T
  entered_frames = np.where(entered, frames, -1)
  tuple_order = np.lexsort((np.arange(n), -x2, -y2, -x1, -y1, -labels, entered_frames))
  stays = entered & (_rank_within(entered_frames, tuple_order) < room[frames])
  return ~big | above | stays


def _first_max(segment_starts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(max, index of its first occurrence) of each segment of `values` (segments non-empty, starts ascending)."""
  peak = np.maximum.reduceat(values, segment_starts)
  segment = np.repeat(np.arange(len(segment_starts)), np.diff(np.append(segment_starts, len(values))))
  index = np.where(values == peak[segment], np.arange(len(values)), len(values))
  return peak, np.minimum.reduceat(index, segment_starts)


def _true_positives(gt_groups: np.ndarray, gt_boxes: np.ndarray, det_groups: np.ndarray, det_boxes: np.ndarray,
                    claim_order: np.ndarray) -> np.ndarray:
  """(N_det,) bool: the detections that take a ground-truth box of their group (keyframe and class): IoU >= 0.5 to
  the box of the group they overlap most (first of equals in ground-truth order), before any other detection in
  claim_order. Groups are ints; boxes (N, 4) x1, y1, x2, y2."""
  by_group = np.argsort(gt_groups, kind='stable')
  sorted_groups = gt_groups[by_group]
  first = np.searchsorted(sorted_groups, det_groups, side='left')
  count = np.searchsorted(sorted_groups, det_groups, side='right') - first
  has = np.flatnonzero(count > 0)
  tp = np.zeros(len(det_groups), dtype=bool)
  if not len(has):
    return tp
  pair_det = np.repeat(has, count[has])
  starts = np.concatenate([[0], np.cumsum(count[has])[:-1]])
  pair_gt = by_group[first[pair_det] + np.arange(len(pair_det)) - np.repeat(starts, count[has])]
  d, g = det_boxes[pair_det], gt_boxes[pair_gt]
  # Same arithmetic as the reference (heights times widths, then the two areas summed before the overlap is taken
  # off), so that an IoU at 0.5 lands on the same side of the threshold.
  height = np.maximum(0.0, np.minimum(d[:, 3], g[:, 3]) - np.maximum(d[:, 1], g[:, 1]))
  width = np.maximum(0.0, np.minimum(d[:, 2], g[:, 2]) - np.maximum(d[:, 0], g[:, 0]))
  overlap = height * width
  area_d = (d[:, 3] - d[:, 1]) * (d[:, 2] - d[:, 0])
  area_g = (g[:, 3] - g[:, 1]) * (g[:, 2] - g[:, 0])
  iou = overlap / (area_d + area_g - overlap)
  best_iou, best_pair = _first_max(starts, iou)
  hit = best_iou >= IOU_THRESHOLD
  claimers = has[hit]
  target = pair_gt[best_pair[hit]]
  order = np.lexsort((claim_order[claimers], target))
  first_claim = np.ones(len(order), dtype=bool)
  first_claim[1:] = target[order][1:] != target[order][:-1]
  tp[claimers[order[first_claim]]] = True
  return tp


def _average_precision(scores: np.ndarray, tp: np.ndarray, num_groundtruth: int) -> float:
  """All-point interpolated AP of one class: scores (n,) in the reference's concatenation order, tp (n,) bool."""
  if not len(scores):
    return 0.0
  # numpy's default (unstable) argsort, reversed: the reference ranks tied scores this way.
  ranked = tp[np.argsort(scores)[::-1]]
  hits = np.cumsum(ranked)
  precision = hits / np.arange(1, len(ranked) + 1)
  envelope = np.maximum.accumulate(precision[::-1])[::-1]
  return float(envelope[ranked].sum() / num_groundtruth)


def frame_map(groundtruth: BoxRows, detections: BoxRows, class_ids: Iterable[int],
              exclusions: Iterable[tuple[str, int]] = (), max_detections_per_frame: int | None = None
              ) -> tuple[float, dict[int, float]]:
  """(mAP, {class id: AP}) of detections against ground truth at IoU 0.5, over the classes of `class_ids` (the
  label map's) that have ground truth (the module docstring gives the rules). exclusions: (video id, second)
  keyframes left out. max_detections_per_frame: None keeps all detections, N (the challenge's 50) the N a keyframe's
  heap keeps. The mAP is NaN when no class has ground truth."""
  ids = np.array(sorted(set(int(i) for i in class_ids)), dtype=np.int64)
  if not len(ids):
    raise InputError('frame_map: no class ids to score')
  if max_detections_per_frame is not None and max_detections_per_frame < 1:
    raise InputError(f'max_detections_per_frame: {max_detections_per_frame} (want None or >= 1)')
  _check_rows(groundtruth, 'groundtruth', None, groundtruth=True)
  _check_rows(detections, 'detections', None, groundtruth=False)
  # From here on rows are ints and floats: keyframe codes stand for the video ids.
  (gt_frames, det_frames), excluded = _frame_codes([groundtruth, detections], exclusions)
  det = np.flatnonzero(np.isin(detections.labels, ids))
  frames, boxes, labels, scores = det_frames[det], detections.boxes[det], detections.labels[det], detections.scores[det]
  # A keyframe's place in the reference's concatenation of per-keyframe results is where its first row of the label
  # map's classes comes in the file (rows the cap, the exclusions or an empty box drop later included).
  first_row = np.full(int(frames.max(initial=-1)) + 1, len(frames), dtype=np.int64)
  np.minimum.at(first_row, frames, np.arange(len(frames)))
  if max_detections_per_frame is None:
    claim_order = np.arange(len(frames))
  else:
    keep = _heap_keep(frames, scores, labels, boxes, max_detections_per_frame)
    frames, boxes, labels, scores = frames[keep], boxes[keep], labels[keep], scores[keep]
    claim_order = _rank_within(frames, np.lexsort((-scores, frames)))
  keep = ~np.isin(frames, excluded) & (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3])
  frames, boxes, labels, scores, claim_order = frames[keep], boxes[keep], labels[keep], scores[keep], claim_order[keep]
  gt = np.flatnonzero(np.isin(groundtruth.labels, ids) & ~np.isin(gt_frames, excluded))
  gt_labels = groundtruth.labels[gt]
  span = int(ids[-1]) + 1
  tp = _true_positives(gt_frames[gt] * span + gt_labels, groundtruth.boxes[gt], frames * span + labels, boxes,
                       claim_order)

  classes, counts = np.unique(gt_labels, return_counts=True)
  by_class = np.lexsort((claim_order, first_row[frames], labels))
  sorted_labels = labels[by_class]
  per_class = {}
  for c, num_groundtruth in zip(classes.tolist(), counts.tolist()):
    lo, hi = np.searchsorted(sorted_labels, [c, c + 1])
    rows = by_class[lo:hi]
    per_class[c] = _average_precision(scores[rows], tp[rows], num_groundtruth)
  mean = float(np.mean(list(per_class.values()))) if per_class else math.nan
  return mean, per_class


# --- Command line ------------------------------------------------------------------------------------------------

def evaluate_files(labelmap: str, groundtruth: str, detections: str, exclusions: str | None = None,
                   max_detections_per_frame: int | None = None) -> dict:
  """The report `python -m mvit_jax.ava_eval` prints for these files (module docstring); bad input: InputError."""
  names, class_ids = read_labelmap(labelmap)
  gt = read_groundtruth(groundtruth)
  # A label map may name a subset of the data set's classes: ids of the ground truth are known too.
  det = read_detections(detections, range(1, max(class_ids[-1], int(gt.labels.max(initial=0))) + 1))
  excluded = read_exclusions(exclusions) if exclusions else set()
  mean, per_class = frame_map(gt, det, class_ids, excluded, max_detections_per_frame)
  if not per_class:
    raise InputError(f'groundtruth {groundtruth}: no rows of the label map\'s classes outside the excluded keyframes')
  scored = np.isin(gt.labels, class_ids) & ~np.array([(v, s) in excluded for v, s in
                                                      zip(gt.videos.tolist(), gt.seconds.tolist())], dtype=bool)
  return {
      'mAP': mean,
      'per_class_AP': {str(c): ap for c, ap in per_class.items()},
      'class_names': {str(c): names[c] for c in per_class},
      'no_groundtruth': [c for c in class_ids if c not in per_class],
      'groundtruth_rows': int(scored.sum()),
      'detection_rows': int(len(det.labels)),
      'frames': int(len(set(zip(gt.videos[scored].tolist(), gt.seconds[scored].tolist())))),
      'max_detections_per_frame': max_detections_per_frame,
  }


def format_table(report: Mapping) -> str:
  """The report as a table for people: AP in percent per class, then the mAP."""
  width = max([len(n) for n in report['class_names'].values()] + [5])
  lines = [f'{"id":>4}  {"class":<{width}}  {"AP %":>6}']
  for c, ap in report['per_class_AP'].items():
    lines.append(f'{c:>4}  {report["class_names"][c]:<{width}}  {100 * ap:6.2f}')
  if report['no_groundtruth']:
    lines.append(f'no ground truth (not in the mean): {", ".join(map(str, report["no_groundtruth"]))}')
  lines.append(f'mAP {100 * report["mAP"]:.2f} over {len(report["per_class_AP"])} classes '
               f'({report["groundtruth_rows"]} ground-truth rows in {report["frames"]} keyframes, '
               f'{report["detection_rows"]} detection rows)')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise InputError(f'unexpected arguments {" ".join(argv[1:])!r} (the files are given by flags)')
  if FLAGS.max_detections_per_frame is not None and FLAGS.max_detections_per_frame < 1:
    raise InputError(f'--max_detections_per_frame: {FLAGS.max_detections_per_frame} (want >= 1, or leave it out '
                     'to keep all)')
  report = evaluate_files(FLAGS.labelmap, FLAGS.groundtruth, FLAGS.detections, FLAGS.exclusions,
                          FLAGS.max_detections_per_frame)
  print(format_table(report), file=sys.stderr)
  print(json.dumps(report), flush=True)


def define_flags():
  """Command-line flags, defined only when run as a program (importing the module defines none)."""
  flags.DEFINE_string('labelmap', None, 'Label map pbtxt: the classes scored.', required=True)
  flags.DEFINE_string('groundtruth', None, 'Ground-truth CSV video_id,sec,x1,y1,x2,y2,action_id[,person_id].',
                      required=True)
  flags.DEFINE_string('detections', None, 'Detections CSV video_id,sec,x1,y1,x2,y2,action_id,score.', required=True)
  flags.DEFINE_string('exclusions', None, 'Excluded keyframes CSV video_id,sec.')
  flags.DEFINE_integer('max_detections_per_frame', None, 'Keep the N highest-scoring detections per keyframe '
                       f'(the ActivityNet challenge: {CHALLENGE_MAX_DETECTIONS}); default all (PySlowFast).')
