"""Multi-view evaluation: every view (K temporal clips x S spatial crops) of a video is scored, the per-view
softmax probabilities are averaged per video (PySlowFast ENSEMBLE_METHOD sum / count), or for multi-label data the
per-view sigmoid scores are max-pooled over views (Charades protocol). Reports top-1/top-5 accuracy in percent, or
mAP in percent, writes per-video predictions to WORKDIR/eval/predictions_<step>.csv and the latest metrics to
WORKDIR/metrics.json (with the confusion matrix and per-class accuracy), and gives a metric writer the pictures and
table of `eval_report`.
"""
from collections.abc import Callable, Iterable, Mapping, Sequence
import csv
import io
import json

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvit_jax.data import device_preprocess
from mvit_jax.system import storage
from mvit_jax.train import eval_report
from mvit_jax.train import sharding as sharding_lib


def make_predict_fn(model: nn.Module, mesh: jax.sharding.Mesh, rules, data_config, features: Sequence[str] = ()):
  """Jitted (params, global batch) -> replicated {'scores' (B, C) float32, 'logits' (B, C) float32, 'label',
  'video_index', 'mask'}.

  With `features` (names of `model.features` outputs: 'pre_logits', 'stage1', ...) the outputs also hold those,
  float32, from the same forward pass as the logits.
  """
  multi_label = data_config.multi_label

  def predict(params, batch):
    # The loader's uint8 clips are normalised here, on the device.
    videos = device_preprocess.preprocess_on_device(batch['video'], jax.random.key(0), data_config, train=False)
    outputs = model.apply({'params': params}, videos, method='features')
    logits = outputs['logits']
    extra = {name: outputs[name].astype(jnp.float32) for name in features}
    scores = jax.nn.sigmoid(logits) if multi_label else jax.nn.softmax(logits, axis=-1)
    return {'scores': scores, 'logits': logits, 'label': batch['label'], 'video_index': batch['video_index'],
            'mask': batch['mask'], **extra}

  return replicated_outputs(predict, mesh, rules)


def replicated_outputs(predict: Callable, mesh: jax.sharding.Mesh, rules) -> Callable:
  """`predict(params, global batch) -> dict of arrays` jitted with replicated outputs; returns run(params, batch)
  -> the same dict as numpy arrays, the whole global batch on every process."""
  jitted = jax.jit(predict, out_shardings=jax.NamedSharding(mesh, jax.P()))

  def run(params, batch):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      out = jitted(params, batch)
    # Replicated outputs: every process holds the whole global batch in its first shard.
    return {k: np.asarray(v.addressable_data(0)) for k, v in out.items()}

  return run


class ViewAggregator:
  """Combines per-view scores into per-video scores: mean over views, or max for multi-label."""

  def __init__(self, multi_label: bool):
    self.multi_label = multi_label
    self._scores: dict[int, np.ndarray] = {}
    self._counts: dict[int, int] = {}
    self._labels: dict[int, np.ndarray] = {}

  def add(self, scores: np.ndarray, labels: np.ndarray, video_index: np.ndarray, mask: np.ndarray) -> None:
    """scores (B, C); labels (B,) int or (B, C) multi-hot; video_index (B,); mask (B,) bool (False = padding)."""
    for s, y, v in zip(scores[mask], labels[mask], video_index[mask]):
      v = int(v)
      if v not in self._scores:
        self._scores[v], self._counts[v], self._labels[v] = s.astype(np.float64), 1, y
      else:
        self._scores[v] = np.maximum(self._scores[v], s) if self.multi_label else self._scores[v] + s
        self._counts[v] += 1

  def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(video_ids (N,), scores (N, C), labels (N,) or (N, C), views per video (N,)), sorted by video id."""
    ids = np.array(sorted(self._scores), dtype=np.int64)
    counts = np.array([self._counts[v] for v in ids])
    scores = np.stack([self._scores[v] for v in ids])
    if not self.multi_label:
      scores = scores / counts[:, None]
    return ids, scores, np.stack([self._labels[v] for v in ids]), counts


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
  """Percent of rows whose label is among the k highest scores. scores (N, C), labels (N,) int."""
  k = min(k, scores.shape[1])
  topk = np.argsort(-scores, axis=1, kind='stable')[:, :k]
  return 100.0 * float(np.mean(np.any(topk == labels[:, None], axis=1)))


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  """Non-interpolated AP of one class: sum over distinct score thresholds of (recall step) x precision.

  Equals sklearn.metrics.average_precision_score (ties in score are one threshold); written here because
  scikit-learn is not a dependency.
  """
  order = np.argsort(-scores, kind='stable')
  scores, positives = scores[order], positives[order].astype(np.float64)
  last_of_group = np.r_[scores[1:] != scores[:-1], True]
  tp = np.cumsum(positives)[last_of_group]
  seen = np.arange(1, len(scores) + 1)[last_of_group]
  recall_step = np.diff(np.r_[0.0, tp]) / positives.sum()
  return float(np.sum(recall_step * tp / seen))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """Percent mAP over classes with at least one positive (PySlowFast Charades). labels (N, C) multi-hot."""
  labels = labels > 0.5
  classes = np.flatnonzero(labels.any(axis=0))
  if classes.size == 0:
    raise ValueError('mAP: no class has a positive video in the evaluation set')
  return 100.0 * float(np.mean([average_precision(scores[:, c], labels[:, c]) for c in classes]))


def run_eval(predict_fn, params, batches: Iterable[Mapping[str, np.ndarray]], mesh: jax.sharding.Mesh, *,
             multi_label: bool, step: int, workdir: str | None, writer=None, class_names: Sequence[str] | None = None,
             image_clips: int = 6, confusion_classes: int = 20) -> dict[str, float]:
  """Scores every batch of the (finite) eval iterator, aggregates views, writes predictions and metrics.json and
  returns the scalar metrics. With a clu metric `writer`: 'eval/clips' (first, middle and last frames of up to
  `image_clips` videos, one per class, under their true and predicted classes), 'eval/confusion_matrix' (of the
  `confusion_classes` classes with the most videos) and the text 'eval/per_class_accuracy'; 0 leaves a picture out.
  """
  aggregator = ViewAggregator(multi_label)
  sampler = eval_report.ClipSampler(image_clips)
  for batch in batches:
    out = predict_fn(params, sharding_lib.global_batch(batch, mesh))
    aggregator.add(out['scores'], out['label'], out['video_index'], out['mask'].astype(bool))
    sampler.add(batch['video'], batch['label'], batch['video_index'], batch['mask'].astype(bool))  # This process's.
  ids, scores, labels, counts = aggregator.result()
  if multi_label:
    metrics = {'mAP': mean_average_precision(scores, labels)}
  else:
    metrics = {'top1': topk_accuracy(scores, labels, 1), 'top5': topk_accuracy(scores, labels, 5)}
  metrics['num_videos'] = len(ids)
  metrics['views_per_video'] = float(np.mean(counts))
  logging.info('Eval at step %d over %d videos: %s', step, len(ids), metrics)
  record = {'step': step, **metrics}
  confusion = None
  if not multi_label:
    confusion = eval_report.confusion_matrix(labels, np.argmax(scores, axis=1), scores.shape[1])
    record['per_class_accuracy'] = [None if np.isnan(a) else a for a in eval_report.per_class_accuracy(confusion)]
    record['confusion_matrix'] = confusion.tolist()  # Row = true class, column = predicted class.
  if workdir is not None and jax.process_index() == 0:
    write_predictions(storage.join(workdir, 'eval', f'predictions_{step}.csv'), ids, scores, labels, multi_label)
    storage.write_text(storage.join(workdir, 'metrics.json'), json_key_per_line(record))
  if writer is not None:
    _write_summaries(writer, step, sampler, ids, scores, labels, confusion, class_names, confusion_classes)
  return metrics


def _write_summaries(writer, step: int, sampler: eval_report.ClipSampler, ids, scores, labels, confusion,
                     class_names, confusion_classes: int) -> None:
  """The eval pictures and table (run_eval's docstring) through the clu metric writer."""
  images, texts = {}, {}
  clip_ids, frames = sampler.result()
  if len(clip_ids):
    rows = np.searchsorted(ids, clip_ids)
    if labels.ndim == 2:  # Multi-hot: every true class, and the highest-scoring one.
      true = ['+'.join(eval_report.class_name(c, class_names) for c in np.flatnonzero(labels[r] > 0.5)) for r in rows]
    else:
      true = [eval_report.class_name(int(labels[r]), class_names) for r in rows]
    predicted = [eval_report.class_name(int(np.argmax(scores[r])), class_names) for r in rows]
    images['eval/clips'] = eval_report.clip_grid(frames, true, predicted)
  if confusion is not None:
    if confusion_classes > 0:
      images['eval/confusion_matrix'] = eval_report.confusion_picture(confusion, class_names, confusion_classes)
    texts['eval/per_class_accuracy'] = eval_report.accuracy_table(confusion, class_names)
  writer.write_images(step, images)
  writer.write_texts(step, texts)


def json_key_per_line(record: Mapping) -> str:
  """JSON object text with one key per line and compact values: a 400-class confusion matrix is one line, not
  160,000."""
  return '{\n' + ',\n'.join(f' {json.dumps(k)}: {json.dumps(v)}' for k, v in record.items()) + '\n}\n'


def write_predictions(path: str, ids, scores, labels, multi_label: bool) -> None:
  """CSV: video_index (row of the eval manifest), label(s), top-5 classes and their scores (';'-separated)."""
  top = np.argsort(-scores, axis=1, kind='stable')[:, :5]
  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(['video_index', 'label', 'top5_classes', 'top5_scores'])
  for v, s, y, t in zip(ids, scores, labels, top):
    label = ';'.join(map(str, np.flatnonzero(y > 0.5))) if multi_label else int(y)
    writer.writerow([int(v), label, ';'.join(map(str, t)), ';'.join(f'{s[c]:.5f}' for c in t)])
  storage.write_text(path, text.getvalue())
