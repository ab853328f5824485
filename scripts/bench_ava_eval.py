"""Seconds to score an AVA-val-sized case: mvit_jax.ava_eval against PySlowFast 1.0's scorer on the same files.

  python scripts/bench_ava_eval.py [--scale 1.0] [--seed 0] [--workdir DIR] [--no_reference]

The case (generated, written to --workdir or a temporary folder): AVA v2.2 val's shape, 64 videos of 897 keyframes
(902-1798 s) scaled by --scale, 1-3 people in 45% of the keyframes (~52k ground-truth boxes at scale 1), each with
1-3 of 80 actions (a ground-truth row per action); detections: each person's box jittered, some twice (~1.2 boxes
per person), every box with every one of the 80 classes (~5 M rows), its true actions scored higher; scored on the
60 classes of the ActivityNet list, with exclusions. Timed, in wall and CPU seconds: ours through the files
(`evaluate_files`: read + score, as the command does), ours in memory (`frame_map` only), ours with the challenge's
cap of 50, writing the detections (`write_detections`), and the reference (its readers + `run_evaluation`, as
`evaluate_ava_from_files` runs them). The two mAPs and the largest per-class AP difference are printed too. Needs
the test extra (pyslowfast==1.0) for the reference.
"""
import argparse
import contextlib
import os
import tempfile
import time

import numpy as np

from mvit_jax.train import ava_eval

VIDEOS, KEYFRAMES, CLASSES = 64, 897, 80
ACTIVITYNET_IDS = [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37,
                   38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68,
                   69, 70, 72, 73, 74, 76, 77, 78, 79, 80]  # ava_action_list_v2.1_for_activitynet_2018.pbtxt


def write_case(folder: str, scale: float, rng: np.random.Generator) -> dict[str, str]:
  files = {name: os.path.join(folder, file) for name, file in (
      ('labelmap', 'labels.pbtxt'), ('groundtruth', 'gt.csv'), ('detections', 'det.csv'),
      ('exclusions', 'excluded.csv'))}
  with open(files['labelmap'], 'w') as f:
    f.write(''.join(f'item {{\n  name: "action {c}"\n  id: {c}\n}}\n' for c in ACTIVITYNET_IDS))
  keyframes = [(f'video{v:04d}xyz', sec) for v in range(VIDEOS) for sec in range(902, 902 + int(KEYFRAMES * scale))]
  gt_lines, det_videos, det_secs, det_boxes, det_actions = [], [], [], [], []
  for video, sec in keyframes:
    people = rng.integers(1, 4) if rng.random() < 0.45 else 0
    for person in range(people):
      x1, y1 = rng.uniform(0, 0.6, 2)
      box = np.array([x1, y1, x1 + rng.uniform(0.1, 0.4), y1 + rng.uniform(0.2, 0.4)])
      actions = rng.choice(np.arange(1, CLASSES + 1), size=rng.integers(1, 4), replace=False)
      gt_lines += [f'{video},{sec:04d},{box[0]:.3f},{box[1]:.3f},{box[2]:.3f},{box[3]:.3f},{a},{person}\n'
                   for a in actions]
      for _ in range(1 + (rng.random() < 0.2)):  # Some people detected twice.
        det_boxes.append(np.clip(box + rng.normal(0, 0.03, 4), 0, 1))
        det_videos.append(video)
        det_secs.append(sec)
        det_actions.append(actions)
  with open(files['groundtruth'], 'w') as f:
    f.writelines(gt_lines)
  with open(files['exclusions'], 'w') as f:
    f.writelines(f'{v},{s:04d}\n' for v, s in (keyframes[i] for i in rng.choice(len(keyframes), 50, replace=False)))
  scores = rng.random((len(det_boxes), CLASSES)).astype(np.float32)
  for i, actions in enumerate(det_actions):  # A model that has learnt something: mAP ~0.5.
    scores[i, actions - 1] += 0.6
  rows = ava_eval.detection_rows(det_videos, det_secs, np.array(det_boxes), scores, range(1, CLASSES + 1))
  _, wall, cpu = timed(ava_eval.write_detections, files['detections'], rows)
  print(f'write_detections:  {wall:6.1f} s wall {cpu:6.1f} s CPU  for {len(rows.labels)} rows ({len(gt_lines)} '
        f'ground-truth rows, {len(det_boxes)} detected boxes, {len(keyframes)} keyframes)')
  return files


def reference(files):
  """PySlowFast 1.0's scorer: (mAP, {class name: AP})."""
  from slowfast.utils import ava_eval_helper  # pylint: disable=g-import-not-at-top  (test extra only)
  categories, whitelist = ava_eval_helper.read_labelmap(files['labelmap'])
  excluded = ava_eval_helper.read_exclusions(files['exclusions'])
  groundtruth = ava_eval_helper.read_csv(files['groundtruth'], whitelist, load_score=False)
  detections = ava_eval_helper.read_csv(files['detections'], whitelist, load_score=True)
  # np.float and np.NAN, which it uses, left numpy in 2.0.
  np.float, np.NAN = float, np.nan
  with contextlib.redirect_stdout(None):
    metrics = ava_eval_helper.run_evaluation(categories, groundtruth, detections, excluded, verbose=False)
  prefix = 'PascalBoxes_PerformanceByCategory/AP@0.5IOU/action '
  return metrics['PascalBoxes_Precision/mAP@0.5IOU'], {
      int(k[len(prefix):]): v for k, v in metrics.items() if k.startswith(prefix) and not np.isnan(v)}


def timed(fn, *args, **kwargs):
  """(fn's result, wall seconds, CPU seconds of this process): on a shared machine the CPU time is the fair one."""
  wall, cpu = time.perf_counter(), time.process_time()
  result = fn(*args, **kwargs)
  return result, time.perf_counter() - wall, time.process_time() - cpu


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--scale', type=float, default=1.0, help='Fraction of the keyframes of AVA val.')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workdir', default=None, help='Folder for the generated files (default: a temporary one).')
  parser.add_argument('--no_reference', action='store_true', help='Time ours only.')
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    folder = args.workdir or tmp
    os.makedirs(folder, exist_ok=True)
    files = write_case(folder, args.scale, np.random.default_rng(args.seed))
    report, *ours = timed(ava_eval.evaluate_files, *files.values())
    print(f'ours (files):      {ours[0]:6.1f} s wall {ours[1]:6.1f} s CPU  mAP {report["mAP"]:.6f}')
    _, class_ids = ava_eval.read_labelmap(files['labelmap'])
    gt, det = ava_eval.read_groundtruth(files['groundtruth']), ava_eval.read_detections(files['detections'])
    excluded = ava_eval.read_exclusions(files['exclusions'])
    _, *memory = timed(ava_eval.frame_map, gt, det, class_ids, excluded)
    print(f'ours (in memory):  {memory[0]:6.1f} s wall {memory[1]:6.1f} s CPU')
    (capped, _), *capped_s = timed(ava_eval.frame_map, gt, det, class_ids, excluded, 50)
    print(f'ours (cap 50):     {capped_s[0]:6.1f} s wall {capped_s[1]:6.1f} s CPU  mAP {capped:.6f}')
    if args.no_reference:
      return
    (ref_map, ref_ap), *ref = timed(reference, files)
    ours_ap = {int(c): ap for c, ap in report['per_class_AP'].items()}
    assert sorted(ours_ap) == sorted(ref_ap)
    worst = max(abs(ours_ap[c] - ap) for c, ap in ref_ap.items())
    print(f'reference (files): {ref[0]:6.1f} s wall {ref[1]:6.1f} s CPU  mAP {ref_map:.6f}')
    print(f'reference / ours (files): {ref[0] / ours[0]:.1f}x wall, {ref[1] / ours[1]:.1f}x CPU; '
          f'|mAP difference| {abs(ref_map - report["mAP"]):.2e}, largest |AP difference| {worst:.2e} over '
          f'{len(ref_ap)} classes')


if __name__ == '__main__':
  main()
