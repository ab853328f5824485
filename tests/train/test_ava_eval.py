"""AVA frame mAP (mvit_jax.train.ava_eval) against PySlowFast 1.0's scorer (slowfast/utils/ava_eval_helper.py, the
reference behind the MViT papers' AVA numbers) on generated files, random and adversarial, mAP and every AP within
1e-6; the ActivityNet cap of detections per keyframe against get_ava_performance.py's heap; the readers' one-line
errors; the command line end to end."""
import collections
import contextlib
import heapq
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from slowfast.utils import ava_eval_helper

from mvit_jax.system import storage
from mvit_jax.system.errors import InputError
from mvit_jax.train import ava_eval

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 1e-6
REFERENCE_MAP = 'PascalBoxes_Precision/mAP@0.5IOU'
REFERENCE_AP = 'PascalBoxes_PerformanceByCategory/AP@0.5IOU/'


# --- The reference and our scorer on the same files ----------------------------------------------------------------

@contextlib.contextmanager
def numpy_aliases():
  """np.float and np.NAN, which the 2020 reference uses and numpy 2 removed, for the duration of its call."""
  added = [name for name in ('float', 'NAN') if name not in vars(np)]
  for name, value in (('float', float), ('NAN', np.nan)):
    if name in added:
      setattr(np, name, value)
  try:
    yield
  finally:
    for name in added:
      delattr(np, name)


def reference_scores(files) -> tuple[float, dict[int, float]]:
  """(mAP, {class id: AP}) from PySlowFast's scorer; its NaN APs (classes without ground truth) left out."""
  categories, whitelist = ava_eval_helper.read_labelmap(files['labelmap'])
  excluded = ava_eval_helper.read_exclusions(files.get('exclusions'))
  groundtruth = ava_eval_helper.read_csv(files['groundtruth'], whitelist, load_score=False)
  detections = ava_eval_helper.read_csv(files['detections'], whitelist, load_score=True)
  with numpy_aliases(), contextlib.redirect_stdout(None):
    metrics = ava_eval_helper.run_evaluation(categories, groundtruth, detections, excluded)
  ids = {c['name']: c['id'] for c in categories}
  per_class = {ids[key[len(REFERENCE_AP):]]: value for key, value in metrics.items()
               if key.startswith(REFERENCE_AP) and not math.isnan(value)}
  return metrics[REFERENCE_MAP], per_class


def our_scores(files, max_detections_per_frame=None) -> tuple[float, dict[int, float]]:
  report = ava_eval.evaluate_files(files['labelmap'], files['groundtruth'], files['detections'],
                                   files.get('exclusions'), max_detections_per_frame)
  return report['mAP'], {int(c): ap for c, ap in report['per_class_AP'].items()}


def assert_same_scores(ours, reference):
  assert sorted(ours[1]) == sorted(reference[1])
  for c, ap in reference[1].items():
    assert abs(ours[1][c] - ap) <= TOLERANCE, (c, ours[1][c], ap)
  assert abs(ours[0] - reference[0]) <= TOLERANCE, (ours[0], reference[0])


def write_files(folder, class_ids, groundtruth, detections, exclusions=None, names=None):
  """The four files (rows as lists of values, written as given) in `folder`; the label map in the AVA layout."""
  os.makedirs(folder, exist_ok=True)
  files = {'labelmap': os.path.join(folder, 'labels.pbtxt'), 'groundtruth': os.path.join(folder, 'gt.csv'),
           'detections': os.path.join(folder, 'det.csv')}
  names = names or {c: f'action {c}' for c in class_ids}
  with open(files['labelmap'], 'w') as f:
    f.write(''.join(f'item {{\n  name: "{names[c]}"\n  id: {c}\n}}\n' for c in class_ids))
  for key, rows in (('groundtruth', groundtruth), ('detections', detections)):
    with open(files[key], 'w') as f:
      f.write(''.join(','.join(map(str, row)) + '\n' for row in rows))
  if exclusions is not None:
    files['exclusions'] = os.path.join(folder, 'excluded.csv')
    with open(files['exclusions'], 'w') as f:
      f.write(''.join(f'{v},{s}\n' for v, s in exclusions))
  return files


def random_box(rng, decimals=3):
  x1, y1 = rng.uniform(0, 0.7, 2)
  x2, y2 = x1 + rng.uniform(0.05, 0.3), y1 + rng.uniform(0.05, 0.3)
  return [round(float(v), decimals) for v in (x1, y1, x2, y2)]


def jitter(rng, box, scale):
  return [round(float(np.clip(v + rng.normal(0, scale), 0, 1)), 3) for v in box]


def random_case(rng, *, videos=3, seconds=5, persons=3, id_space=12, scores=None, shuffle='frame',
                excluded=3):
  """Ground truth: persons per keyframe, each with 1-3 actions of 1..id_space (AVA: a box row per action).
  Detections: each person's box jittered (some twice), plus stray boxes and keyframes without ground truth, every
  box with every class of the id space; rows shuffled within keyframes ('frame'), also the keyframes ('frames'), or
  across the file ('file')."""
  class_ids = sorted(rng.choice(np.arange(1, id_space + 1), size=id_space * 2 // 3, replace=False).tolist())
  class_ids[-1] = id_space  # The label map's largest id bounds the valid ids.
  groundtruth, frames = [], []
  names = [f'v{i}_{rng.integers(10**6):06d}' for i in range(videos)]
  for video in names:
    for sec in range(902, 902 + seconds):
      people = [random_box(rng) for _ in range(rng.integers(0, persons + 1))]
      frames.append((video, sec, people))
      for person, box in enumerate(people):
        for action in rng.choice(np.arange(1, id_space + 1), size=rng.integers(1, 4), replace=False):
          groundtruth.append([video, f'{sec:04d}', *box, int(action), person])
  frames.append(('v_no_gt', 1000, [random_box(rng)]))
  detections = []
  for video, sec, people in (frames if shuffle != 'frames' else [frames[i] for i in rng.permutation(len(frames))]):
    boxes = [jitter(rng, b, 0.03) for b in people] + [jitter(rng, b, 0.08) for b in people if rng.random() < 0.5]
    boxes += [random_box(rng) for _ in range(rng.integers(0, 3))]
    rows = [[video, sec, *b, c, scores(rng) if scores else round(float(rng.random()), 6)]
            for b in boxes for c in range(1, id_space + 1)]
    if shuffle in ('frame', 'frames'):
      rows = [rows[i] for i in rng.permutation(len(rows))]
    detections += rows
  if shuffle == 'file':
    detections = [detections[i] for i in rng.permutation(len(detections))]
  exclusions = [(v, s) for v, s, _ in (frames[i] for i in rng.choice(len(frames), excluded, replace=False))]
  return class_ids, groundtruth, detections, exclusions


# --- Parity with the reference ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('seed', range(6))
def test_random_cases_match_the_reference(seed, tmp_path):
  rng = np.random.default_rng(seed)
  case = random_case(rng, shuffle=('frame', 'file', None)[seed % 3])
  files = write_files(tmp_path, *case)
  ours, reference = our_scores(files), reference_scores(files)
  assert 0.05 < ours[0] < 0.95  # A case where order and overlap matter.
  assert_same_scores(ours, reference)


def test_tied_scores_match_the_reference(tmp_path):
  """Scores from three values: the rank order of ties is the reference's (numpy's argsort of its concatenation,
  keyframes in the order of their first row), with keyframes out of order and rows of keyframes interleaved."""
  for seed in range(4):
    rng = np.random.default_rng(100 + seed)
    case = random_case(rng, videos=4, seconds=6, scores=lambda r: float(r.choice([0.25, 0.5, 0.75])),
                       shuffle=('frames', 'file')[seed % 2])
    files = write_files(tmp_path / str(seed), *case)
    assert_same_scores(our_scores(files), reference_scores(files))


def test_all_detections_tied_and_large_frames(tmp_path):
  """One score for everything, and more than 16 rows per class (numpy's argsort leaves insertion sort there)."""
  rng = np.random.default_rng(7)
  case = random_case(rng, videos=2, seconds=20, persons=6, id_space=4, scores=lambda r: 0.5)
  files = write_files(tmp_path, *case)
  assert_same_scores(our_scores(files), reference_scores(files))


def test_adversarial_rows_match_the_reference(tmp_path):
  """Border and touching boxes, empty boxes, IoU exactly 0.5 and a hair either side, duplicates, a lower score
  first in the file taking the box, keyframes only in one file, classes without ground truth or detections,
  excluded keyframes, rows of classes not in the label map."""
  gt = [
      ['a', '0902', 0.0, 0.0, 0.75, 1.0, 1, 0],   # Det (0.25, 0, 1, 1) overlaps it exactly half: a hit.
      ['a', '0902', 0.0, 0.0, 1.0, 1.0, 2, 0],    # The whole frame.
      ['a', '0902', 0.5, 0.5, 1.0, 1.0, 3, 1],    # Touches det (0, 0, 0.5, 0.5) at a corner: no overlap.
      ['a', '0903', 0.1, 0.1, 0.4, 0.4, 1, 0],
      ['a', '0903', 0.1, 0.1, 0.4, 0.4, 1, 1],    # Two people in the same box: both can be found.
      ['a', '0903', 0.2, 0.2, 0.2, 0.6, 3, 2],    # An empty ground-truth box: counted, never found.
      ['b', '0902', 0.3, 0.3, 0.6, 0.6, 1, 0],
      ['b', '0902', 0.3, 0.3, 0.6, 0.6, 4, 0],    # Class 4: ground truth only here, and excluded below.
      ['b', '0904', 0.0, 0.0, 0.3, 0.3, 5, 0],    # Class 5: ground truth, no detections.
      ['b', '0904', 0.0, 0.0, 0.3, 0.3, 9, 0],    # Class 9 is not in the label map: skipped.
      ['c', '0902', 0.1, 0.2, 0.3, 0.4, 2, 0],
      ['e', '0902', 0.0, 0.0, 0.5, 1.0, 1, 0],     # Det (0.125, 0, 0.625, 1) overlaps both 0.6: takes the first.
      ['e', '0902', 0.25, 0.0, 0.75, 1.0, 1, 1],
  ]
  det = [
      ['a', '0902', 0.25, 0.0, 1.0, 1.0, 1, 0.5],
      ['a', '0902', 0.25, 0.0, 1.0, 1.0, 1, 0.5],   # Duplicate: false positive.
      ['a', '0902', 0.0, 0.0, 1.0, 1.0, 2, 0.9],
      ['a', '0902', 0.0, 0.0, 0.5, 0.5, 3, 0.9],
      ['a', '0902', 0.5, 0.5, 0.5, 0.9, 3, 0.95],   # Empty (x2 == x1): dropped.
      ['a', '0903', 0.1, 0.1, 0.4, 0.4, 1, 0.2],    # Lower score first in the file: takes the first box.
      ['a', '0903', 0.1, 0.1, 0.4, 0.4, 1, 0.7],    # Best box the first, taken: a false positive, although the
      ['a', '0903', 0.1, 0.1, 0.4, 0.4, 1, 0.6],    # second box is free.
      ['a', '0903', 0.2, 0.2, 0.2, 0.6, 3, 0.9],    # Empty detection on the empty box: dropped.
      ['b', '0902', 0.3, 0.3, 0.6, 0.6, 4, 0.9],    # Excluded keyframe.
      ['b', '0902', 0.1, 0.1, 0.7, 0.7, 1, 0.3],    # IoU 0.09 / 0.36 = 0.25.
      ['b', '0902', 0.3, 0.3, 0.6, 0.7, 1, 0.35],   # IoU 0.09 / 0.12 = 0.75.
      ['c', '0902', 0.1, 0.2, 0.3, 0.6, 2, 0.8],    # IoU 0.04 / 0.08: 0.5 up to decimal rounding.
      ['c', '0902', 0.1, 0.2, 0.2, 0.4, 2, 0.8],    # IoU 0.02 / 0.04: the same.
      ['c', '0902', 0.0, 0.2, 0.3, 0.4, 2, 0.1],
      ['d', '0905', 0.0, 0.0, 1.0, 1.0, 2, 1.0],    # No ground truth in this keyframe.
      ['d', '0905', 0.0, 0.0, 1.0, 1.0, 6, 1.0],    # Class 6: detections, no ground truth.
      ['d', '0905', 0.0, 0.0, 1.0, 1.0, 9, 1.0],    # Not in the label map: skipped.
      ['e', '0902', 0.125, 0.0, 0.625, 1.0, 1, 0.9],
      ['e', '0902', 0.25, 0.0, 0.75, 1.0, 1, 0.4],  # So this one finds the second box free.
  ]
  files = write_files(tmp_path, [1, 2, 3, 4, 5, 6, 7, 10], gt, det, exclusions=[('b', 902), ('z', 902)])
  ours, reference = our_scores(files), reference_scores(files)
  assert_same_scores(ours, reference)
  assert sorted(ours[1]) == [1, 2, 3, 5]  # 4: all excluded; 6, 7, 10: no ground truth.
  assert ours[1][5] == 0.0


def test_iou_exactly_half_is_a_hit(tmp_path):
  files = write_files(tmp_path, [1], [['a', 902, 0.0, 0.0, 0.75, 1.0, 1]], [['a', 902, 0.25, 0.0, 1.0, 1.0, 1, 0.5]])
  assert our_scores(files) == (1.0, {1: 1.0}) == reference_scores(files)
  files = write_files(tmp_path, [1], [['a', 902, 0.0, 0.0, 0.75, 1.0, 1]],
                      [['a', 902, 0.25000001, 0.0, 1.0, 1.0, 1, 0.5]])
  assert our_scores(files) == (0.0, {1: 0.0}) == reference_scores(files)


def test_iou_at_half_is_computed_as_the_reference(tmp_path):
  """Decimal boxes whose IoU is 0.5 give 0.5 or the float below it depending on the order of the sum in the
  union: (det area + gt area) - overlap, as the reference adds them."""
  gt = [['a', 902, 0.28, 0.03, 0.7, 0.43, 1], ['b', 902, 0.14, 0.04, 0.62, 0.39, 1]]
  det = [['a', 902, 0.42, 0.03, 0.84, 0.43, 1, 0.9], ['b', 902, 0.3, 0.04, 0.78, 0.39, 1, 0.5]]
  files = write_files(tmp_path, [1], gt, det)
  assert our_scores(files) == (0.5, {1: 0.5}) == reference_scores(files)  # a: 0.5, a hit; b: 0.49999999999999994.


def test_unicode_ids_quotes_and_crlf_read_as_the_reference_reads_them(tmp_path):
  rng = np.random.default_rng(4)
  class_ids, gt, det, exclusions = random_case(rng)
  gt, det = ([['vidé_' + r[0], *r[1:]] for r in rows] for rows in (gt, det))
  files = write_files(tmp_path, class_ids, gt, det, [('vidé_' + v, s) for v, s in exclusions])
  expected = reference_scores(files)
  assert_same_scores(our_scores(files), expected)
  with open(files['detections'], encoding='utf-8') as f:
    lines = f.read().splitlines()
  for quoted in (False, True):  # numpy's reader, then the line-by-line one.
    if quoted:
      lines[0] = '"{}",{}'.format(*lines[0].split(',', 1))
    with open(files['detections'], 'w', encoding='utf-8', newline='') as f:
      f.write('\r\n'.join(lines) + '\r\n')
    assert_same_scores(our_scores(files), reference_scores(files))
    assert_same_scores(our_scores(files), expected)


def test_a_label_map_of_some_classes_scores_those(tmp_path):
  """Ids of the ground truth above the label map's largest are known classes, skipped like the others."""
  rng = np.random.default_rng(8)
  _, gt, det, exclusions = random_case(rng)
  files = write_files(tmp_path, [2, 3], gt, det, exclusions)
  ours = our_scores(files)
  assert sorted(ours[1]) == [2, 3]
  assert_same_scores(ours, reference_scores(files))


def test_empty_detection_file(tmp_path):
  rng = np.random.default_rng(3)
  class_ids, gt, _, exclusions = random_case(rng)
  files = write_files(tmp_path, class_ids, gt, [], exclusions)
  ours = our_scores(files)
  assert_same_scores(ours, reference_scores(files))
  assert ours[0] == 0.0


def test_average_precision_by_hand():
  """Class 1: two boxes; detections hit, miss, hit by score: precision 1, 1/2, 2/3 -> envelope 1, 2/3, 2/3 -> AP
  (1 + 2/3) / 2. Class 2: a box, no detections: 0. Class 3: no ground truth: no AP."""
  a, b, far = [0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9], [0.4, 0.0, 0.5, 0.1]
  gt = ava_eval.box_rows(['v'] * 3, [902] * 3, [a, b, a], [1, 1, 2])
  det = ava_eval.box_rows(['v'] * 4, [902] * 4, [b, far, a, far], [1, 1, 1, 3], [0.7, 0.8, 0.9, 0.9])
  mean, per_class = ava_eval.frame_map(gt, det, [1, 2, 3])
  assert per_class == pytest.approx({1: (1 + 2 / 3) / 2, 2: 0.0})
  assert mean == pytest.approx((1 + 2 / 3) / 4)
  assert math.isnan(ava_eval.frame_map(gt, det, [3])[0])


# --- The ActivityNet cap of detections per keyframe ------------------------------------------------------------------

def heap_kept(rows, cap, class_ids=None):
  """get_ava_performance.py (ActivityNet, 2019) read_csv with capacity `cap`: rows of the label map's classes, per
  key a min-heap of (score, class, y1, x1, y2, x2) that takes a row while it holds fewer than cap, or replaces its
  smallest entry when the row scores more. Returns, per key in the order first seen, the kept tuples by descending
  score as it passes them on."""
  entries = {}
  for video, sec, x1, y1, x2, y2, label, score in rows:
    if class_ids is not None and int(label) not in class_ids:
      continue
    heap = entries.setdefault((video, int(sec)), [])
    item = (float(score), int(label), float(y1), float(x1), float(y2), float(x2))
    if len(heap) < cap:
      heapq.heappush(heap, item)
    elif item[0] > heap[0][0]:
      heapq.heapreplace(heap, item)
  return {key: sorted(heap, key=lambda t: -t[0]) for key, heap in entries.items()}


@pytest.mark.parametrize('cap', [1, 5, 50])
def test_cap_keeps_what_the_challenge_heap_keeps(cap):
  """Many ties at the cut (scores of three values, rows shuffled): the same multiset of rows per keyframe."""
  rng = np.random.default_rng(cap)
  _, _, det, _ = random_case(rng, videos=3, seconds=4, persons=5, id_space=15, shuffle='file',
                             scores=lambda r: float(r.choice([0.2, 0.4, 0.6])))
  rows = ava_eval.box_rows([r[0] for r in det], [r[1] for r in det], [r[2:6] for r in det], [r[6] for r in det],
                           [r[7] for r in det])
  (frames,), _ = ava_eval._frame_codes([rows], ())  # pylint: disable=protected-access
  keep = ava_eval._heap_keep(frames, rows.scores, rows.labels, rows.boxes, cap)  # pylint: disable=protected-access
  kept = ava_eval.BoxRows(*(field[keep] for field in rows))
  ours = {}
  for v, s, (x1, y1, x2, y2), c, p in zip(kept.videos, kept.seconds, kept.boxes, kept.labels, kept.scores):
    ours.setdefault((str(v), int(s)), []).append((float(p), int(c), y1, x1, y2, x2))
  expected = heap_kept(det, cap)
  assert max(len(v) for v in expected.values()) == cap  # The cap bites.
  assert {k: sorted(v) for k, v in ours.items()} == {k: sorted(v) for k, v in expected.items()}


@pytest.mark.parametrize('cap', [3, 50])
def test_cap_scores_match_the_reference_on_the_rows_the_heap_keeps(cap, tmp_path):
  """get_ava_performance.py = the heap, then the reference's scorer on what it keeps (distinct scores: its order
  among equal scores is the heap's layout)."""
  rng = np.random.default_rng(20 + cap)
  class_ids, gt, det, exclusions = random_case(rng, persons=6, id_space=15, shuffle='frame',
                                               scores=lambda r: float(r.random()))
  per_frame = collections.Counter((r[0], r[1]) for r in det if r[6] in class_ids)
  assert max(per_frame.values()) > cap  # The cap bites.
  files = write_files(tmp_path / 'ours', class_ids, gt, det, exclusions)
  capped = [[v, s, x1, y1, x2, y2, c, p] for (v, s), items in heap_kept(det, cap, class_ids).items()
            for p, c, y1, x1, y2, x2 in items]
  capped_files = write_files(tmp_path / 'capped', class_ids, gt, capped, exclusions)
  ours = our_scores(files, max_detections_per_frame=cap)
  assert_same_scores(ours, reference_scores(capped_files))
  assert ours != our_scores(files)  # The cap changes the score.


# --- In-memory rows, writing detections ----------------------------------------------------------------------------

def test_detection_rows_are_every_box_with_every_class():
  rows = ava_eval.detection_rows(['a', 'b'], [902, 903], [[0, 0, 1, 1], [0.5, 0.5, 1, 1]],
                                 np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32), [1, 3])
  assert rows.videos.tolist() == ['a', 'a', 'b', 'b'] and rows.seconds.tolist() == [902, 902, 903, 903]
  assert rows.labels.tolist() == [1, 3, 1, 3]
  np.testing.assert_array_equal(rows.scores, np.float32([0.1, 0.3, 0.4, 0.6]))
  np.testing.assert_array_equal(rows.boxes[1], [0, 0, 1, 1])


def test_written_detections_read_back_as_returned_and_score_the_same(tmp_path):
  rng = np.random.default_rng(11)
  class_ids, gt, _, exclusions = random_case(rng)
  files = write_files(tmp_path, class_ids, gt, [], exclusions)
  boxes = rng.uniform(0, 0.5, (40, 4)).astype(np.float32)
  boxes[:, 2:] += boxes[:, :2]
  boxes[:20] = [r[2:6] for r in gt[:20]]
  rows = ava_eval.detection_rows([r[0] for r in gt[:20]] * 2, [int(r[1]) for r in gt[:20]] * 2, boxes,
                                 rng.random((40, max(class_ids))).astype(np.float32), class_ids)
  returned = ava_eval.write_detections(files['detections'], rows)
  read = ava_eval.read_detections(files['detections'])
  for field in ava_eval.BoxRows._fields:
    np.testing.assert_array_equal(getattr(read, field), getattr(returned, field), err_msg=field)
  np.testing.assert_array_equal(returned.scores.astype(np.float32), rows.scores)  # float32 values kept exactly.
  with open(files['detections']) as f:
    assert f.readline().startswith(f'{gt[0][0]},{gt[0][1]},')
  in_memory = ava_eval.frame_map(ava_eval.read_groundtruth(files['groundtruth']), returned, class_ids, exclusions)
  assert in_memory == our_scores(files)
  assert_same_scores(in_memory, reference_scores(files))


def test_files_in_a_bucket(bucket, tmp_path):
  rng = np.random.default_rng(5)
  local = write_files(tmp_path, *random_case(rng))
  remote = {}
  for key, path in local.items():
    remote[key] = f'{bucket}/ava/{os.path.basename(path)}'
    storage.copy_file(path, remote[key])
  assert our_scores(remote) == our_scores(local)
  rows = ava_eval.read_detections(local['detections'])
  ava_eval.write_detections(f'{bucket}/out/det.csv', rows)
  assert ava_eval.read_detections(f'{bucket}/out/det.csv').labels.tolist() == rows.labels.tolist()


# --- Bad input: one line naming the file and line -----------------------------------------------------------------

@pytest.fixture
def good(tmp_path):
  return write_files(tmp_path, [1, 2, 4],
                     [['a', '0902', 0.1, 0.1, 0.5, 0.5, 1, 0], ['a', '0903', 0.1, 0.1, 0.5, 0.5, 2, 0]],
                     [['a', '0902', 0.1, 0.1, 0.5, 0.5, 1, 0.9], ['a', '0903', 0.1, 0.1, 0.5, 0.5, 2, 0.5]], [])


def rewrite(path, text):
  with open(path, 'w') as f:
    f.write(text)


def error_of(files, cap=None, **overrides):
  files = {**files, **overrides}
  with pytest.raises(InputError) as info:
    ava_eval.evaluate_files(files['labelmap'], files['groundtruth'], files['detections'], files.get('exclusions'), cap)
  message = str(info.value)
  assert '\n' not in message
  return message


@pytest.mark.parametrize('key,text,expected', [
    ('detections', 'a,0902,0.1,0.1,0.5,0.5,1,0.9\na,0903,0.1,0.1,0.5,0.5,2\n', 'line 2: 7 columns, expected 8'),
    ('detections', 'a,0902,0.1,0.1,0.5,0.5,1,0.9\na,0903,0.1,0.1,0.5,0.5,2,0.5,9\n', 'line 2: 9 columns'),
    ('detections', 'a,0902,0.1,0.1,0.5,0.5,1,0.9\n\na,09x3,0.1,0.1,0.5,0.5,2,0.5\n', "line 3: sec '09x3'"),
    ('detections', 'a,0902,0.1,0.1,0.5,0.5,1,high\n', "line 1: '0.1,0.1,0.5,0.5,high' are not all numbers"),
    ('detections', 'a,0902,0.1,0.1,0.5,0.5,1,0.9\na,0902,0.1,0.1,0.5,0.5,5,0.9\n',
     'line 2: unknown class id (known: 1..4)'),
    ('detections', 'a,0902,0.1,0.1,0.5,0.5,0,0.9\n', 'line 1: class id below 1'),
    ('groundtruth', 'a,0902,0.1,0.1,0.5,0.5,1\na,0902,0.1,0.1,0.5,0.5,-1\n', 'line 2: class id below 1'),
    ('detections', 'a,0902,0.1,0.1,0.5,0.5,1,nan\n', 'line 1: a value is not finite'),
    ('groundtruth', 'a,0902,0.1,0.1,0.5,0.5,1\na,0902,0.5,0.1,0.1,0.5,1\n', 'line 2: box with x2 < x1'),
    ('groundtruth', 'a,0902,0.1,0.1,0.5,0.5\n', 'line 1: 6 columns, expected 7 or 8'),
    ('groundtruth', 'a,0902,0.1,0.1,0.5,0.5,3\n', "no rows of the label map's classes"),
    ('exclusions', 'a,0902\na,0903,x\n', 'line 2: 3 columns, expected 2'),
    ('labelmap', 'item {\n  name: "x"\n  id: 1\n}\nitem {\n  name: "y"\n}\n', 'needs a name and an id'),
    ('labelmap', 'item {\n  name: "x"\n  id: 1\n}\nitem {\n  name: "y"\n  id: 1\n}\n', 'class id 1 appears twice'),
    ('labelmap', 'nothing here\n', 'has no `item'),
])
def test_bad_rows_are_one_line_naming_file_and_line(good, tmp_path, key, text, expected):
  path = str(tmp_path / f'bad_{key}')
  rewrite(path, text)
  message = error_of(good, **{key: path})
  assert expected in message and path in message, message


def test_missing_file_is_one_line(good, tmp_path):
  assert 'detections: no such file' in error_of(good, detections=str(tmp_path / 'det.cvs'))
  assert "(did you mean 'det.csv'?)" in error_of(good, detections=str(tmp_path / 'det.cvs'))
  assert 'no such file' in error_of(good, exclusions=str(tmp_path / 'nope.csv'))
  assert 'max_detections_per_frame: 0' in error_of(good, cap=0)


def test_labelmap_variants_and_mixed_groundtruth_columns(good, tmp_path):
  """ava_action_list_v2.2.pbtxt's `label { name label_id label_type }`, and ground truth with and without the
  person id column in one file (the line-by-line reader)."""
  rewrite(good['labelmap'],
          'label {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n  label_type: PERSON_MOVEMENT\n}\n'
          'label {\n  name: "carry/hold (an object)"\n  label_id: 2\n  label_type: OBJECT_MANIPULATION\n}\n')
  names, ids = ava_eval.read_labelmap(good['labelmap'])
  assert names == {1: 'bend/bow (at the waist)', 2: 'carry/hold (an object)'} and ids == [1, 2]
  rewrite(good['groundtruth'], 'a,0902,0.1,0.1,0.5,0.5,1\na,0903,0.1,0.1,0.5,0.5,2,7\n')
  assert ava_eval.evaluate_files(good['labelmap'], good['groundtruth'], good['detections'])['mAP'] == 1.0


# --- The command ---------------------------------------------------------------------------------------------------

def run_command(*args):
  env = {**os.environ, 'PYTHONPATH': REPO}
  return subprocess.run([sys.executable, '-m', 'mvit_jax.ava_eval', *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)


@pytest.mark.slow
def test_command_prints_the_json_line_and_the_table(tmp_path):
  rng = np.random.default_rng(9)
  files = write_files(tmp_path, *random_case(rng))
  args = ['--labelmap', files['labelmap'], '--groundtruth', files['groundtruth'], '--detections',
          files['detections'], '--exclusions', files['exclusions']]
  proc = run_command(*args)
  assert proc.returncode == 0, proc.stderr
  report = json.loads(proc.stdout)
  assert report == json.loads(json.dumps(ava_eval.evaluate_files(*files.values())))
  assert_same_scores((report['mAP'], {int(c): ap for c, ap in report['per_class_AP'].items()}),
                     reference_scores(files))
  assert f'mAP {100 * report["mAP"]:.2f} over {len(report["per_class_AP"])} classes' in proc.stderr
  capped = run_command(*args, '--max_detections_per_frame', '50')
  assert capped.returncode == 0 and json.loads(capped.stdout)['max_detections_per_frame'] == 50
  for bad_args, expected in (
      (['--labelmap', files['labelmap'], '--groundtruth', files['groundtruth'], '--detections', 'nope.csv'],
       "detections: no such file 'nope.csv'"),
      (args + ['--max_detections_per_frame', '0'], '--max_detections_per_frame: 0'),
      (args[:4], 'Flag --detections must have a value other than None'),
  ):
    proc = run_command(*bad_args)
    assert proc.returncode == 2 and proc.stdout == ''
    assert proc.stderr.count('\n') == 1 and expected in proc.stderr, proc.stderr
