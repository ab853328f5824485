"""Multi-view evaluation: per-video averaging / max pooling, top-k, mAP, predictions and metrics.json."""
import csv
import json

import numpy as np
import pytest

from mvit_jax.train import evaluate
from mvit_jax.train import sharding as sharding_lib


def test_views_are_averaged_per_video_and_padding_ignored():
  agg = evaluate.ViewAggregator(multi_label=False)
  # Video 7 has views [0.6, 0.4] and [0.2, 0.8] -> mean [0.4, 0.6]; the third row is padding.
  agg.add(np.array([[0.6, 0.4], [0.2, 0.8], [9.0, 9.0]]), np.array([1, 1, 0]), np.array([7, 7, 0]),
          np.array([True, True, False]))
  agg.add(np.array([[1.0, 0.0]]), np.array([0]), np.array([3]), np.array([True]))
  ids, scores, labels, counts = agg.result()
  np.testing.assert_array_equal(ids, [3, 7])
  np.testing.assert_allclose(scores, [[1.0, 0.0], [0.4, 0.6]])
  np.testing.assert_array_equal(labels, [0, 1])
  np.testing.assert_array_equal(counts, [1, 2])


def test_multilabel_views_are_max_pooled():
  agg = evaluate.ViewAggregator(multi_label=True)
  agg.add(np.array([[0.1, 0.9, 0.3], [0.7, 0.2, 0.3]]), np.array([[1, 0, 0], [1, 0, 0]]), np.array([0, 0]),
          np.array([True, True]))
  _, scores, _, _ = agg.result()
  np.testing.assert_allclose(scores, [[0.7, 0.9, 0.3]])


def test_topk_accuracy():
  scores = np.array([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
  labels = np.array([2, 0, 0])
  assert evaluate.topk_accuracy(scores, labels, 1) == pytest.approx(100 / 3)  # Only row 1.
  assert evaluate.topk_accuracy(scores, labels, 2) == pytest.approx(200 / 3)  # Rows 0 and 1.
  assert evaluate.topk_accuracy(scores, labels, 5) == 100.0  # k clipped to the 3 classes.


def test_average_precision_by_hand():
  # Ranked: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg): AP = (1/1 + 2/3) / 2.
  assert evaluate.average_precision(np.array([0.7, 0.9, 0.1, 0.8]), np.array([1, 1, 0, 0])) == pytest.approx(
      (1 + 2 / 3) / 2)
  # A tie between a positive and a negative is one threshold: precision 1/2 at recall 1.
  assert evaluate.average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
  # mAP skips classes without positives: class 1 here.
  scores = np.array([[0.9, 0.1], [0.2, 0.3]])
  labels = np.array([[1, 0], [0, 0]])
  assert evaluate.mean_average_precision(scores, labels) == pytest.approx(100.0)


def _predict(params, batch):  # Stand-in for the jitted model: passes the scores through.
  del params
  return {k: np.asarray(v) for k, v in batch.items()}


def test_run_eval_writes_predictions_and_metrics(tmp_path):
  mesh = sharding_lib.make_mesh({'data': 8, 'fsdp': 1, 'model': 1})
  rng = np.random.default_rng(0)
  scores = rng.random((16, 5)).astype(np.float32)
  batches = [{'scores': scores[:8], 'label': np.arange(8) % 5, 'video_index': np.arange(8) // 2,
              'mask': np.ones(8, bool)},
             {'scores': scores[8:], 'label': np.arange(8) % 5, 'video_index': 4 + np.arange(8) // 2,
              'mask': np.arange(8) < 6}]
  batches = [{**b, 'label': np.asarray(b['label'], np.int32), 'video': np.zeros((8, 2, 4, 4, 3), np.uint8)}
             for b in batches]
  metrics = evaluate.run_eval(_predict, None, batches, mesh, multi_label=False, step=12, workdir=str(tmp_path))
  assert metrics['num_videos'] == 7  # Videos 0..6; the last 2 rows are padding.
  with open(tmp_path / 'metrics.json') as f:
    saved = json.load(f)
  assert saved['step'] == 12 and saved['top1'] == metrics['top1'] and 'top5' in saved
  # Video v's label is that of its first row: (2 v) % 5 for v < 4, (2 v - 8) % 5 after.
  labels = np.array([0, 2, 4, 1, 0, 2, 4])
  video_scores = np.stack([scores[[2 * v, 2 * v + 1]].mean(0) for v in range(7)])
  expected = np.zeros((5, 5), int)
  np.add.at(expected, (labels, video_scores.argmax(1)), 1)
  np.testing.assert_array_equal(saved['confusion_matrix'], expected)
  assert saved['per_class_accuracy'][3] is None  # No video of class 3.
  assert saved['per_class_accuracy'][0] == 100 * expected[0, 0] / 2
  with open(tmp_path / 'eval' / 'predictions_12.csv') as f:
    rows = list(csv.DictReader(f))
  assert [int(r['video_index']) for r in rows] == list(range(7))
  video0 = (scores[0] + scores[1]) / 2
  assert int(rows[0]['top5_classes'].split(';')[0]) == int(np.argmax(video0))
