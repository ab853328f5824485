"""Action detection (AVA, `config.data.dataset_kind == 'ava'`) in the trainer: the loss, the train batch's shapes,
and the evaluation that writes the detections CSV and scores it with the frame mAP of `mvit_jax.train.ava_eval`.

Shapes: videos (B, T, H, W, 3); boxes (B, N, 4) float32 (x1, y1, x2, y2) normalised to the model-input frame;
box_mask (B, N) bool (False: a padding box); labels (B, N, K) float32 multi-hot (action id i -> column i - 1);
logits (B, N, K) float32, pre-sigmoid. N = config.data.ava_max_boxes, K = the label map's largest id.
"""
from collections.abc import Iterable, Mapping
import math

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax

from mvit_jax.data import ava
from mvit_jax.data import device_preprocess
from mvit_jax.system import storage
from mvit_jax.train import ava_eval
from mvit_jax.train import evaluate
from mvit_jax.train import sharding as sharding_lib


def is_detection(config: ml_collections.ConfigDict) -> bool:
  """A detection run: AVA data, the model built with detection=True."""
  return config.data.dataset_kind == 'ava'


def loss(logits: jax.Array, labels: jax.Array, box_mask: jax.Array) -> jax.Array:
  """Sigmoid binary cross-entropy averaged over the real boxes x classes (PySlowFast's BCELoss, reduction 'mean',
  over the boxes of a batch); padding boxes count for nothing. logits, labels (B, N, K); box_mask (B, N)."""
  per_entry = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
  weights = box_mask.astype(jnp.float32)[..., None]
  return jnp.sum(per_entry * weights) / jnp.maximum(jnp.sum(weights) * logits.shape[-1], 1.0)


def abstract_train_batch(config: ml_collections.ConfigDict, batch_size: int, num_classes: int,
                         mesh: jax.sharding.Mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes, dtypes and shardings of the global batch `ava.make_ava_train_iterator` yields."""
  d, sharding = config.data, sharding_lib.batch_sharding(mesh)
  n = d.ava_max_boxes
  return {'video': jax.ShapeDtypeStruct((batch_size, d.num_frames, d.crop_size, d.crop_size, 3), jnp.uint8,
                                        sharding=sharding),
          'boxes': jax.ShapeDtypeStruct((batch_size, n, 4), jnp.float32, sharding=sharding),
          'box_mask': jax.ShapeDtypeStruct((batch_size, n), jnp.bool_, sharding=sharding),
          'labels': jax.ShapeDtypeStruct((batch_size, n, num_classes), jnp.float32, sharding=sharding)}


def example_boxes(data_config) -> jax.ShapeDtypeStruct:
  """One clip's boxes (1, N, 4), for initialisation."""
  return jax.ShapeDtypeStruct((1, data_config.ava_max_boxes, 4), jnp.float32)


def make_predict_fn(model: nn.Module, mesh: jax.sharding.Mesh, rules, data_config):
  """(params, global eval batch) -> replicated host arrays {'scores' (B, N, K) float32 sigmoid, 'keyframe_index'
  (B,), 'original_boxes' (B, N, 4), 'box_mask' (B, N), 'mask' (B,)}. A full-frame view (ava_test_view 'full')
  compiles once per frame shape."""

  def predict(params, batch):
    videos = device_preprocess.preprocess_on_device(batch['video'], None, data_config, train=False)
    logits = model.apply({'params': params}, videos, batch['boxes'], train=False)
    return {'scores': jax.nn.sigmoid(logits.astype(jnp.float32)), 'keyframe_index': batch['keyframe_index'],
            'original_boxes': batch['original_boxes'], 'box_mask': batch['box_mask'], 'mask': batch['mask']}

  return evaluate.replicated_outputs(predict, mesh, rules)


class BoxCollector:
  """The real boxes of the eval batches with their scores: (keyframe index, box normalised to the original frame,
  K scores) per box. A keyframe seen twice (an eval view repeated) keeps its first boxes."""

  def __init__(self):
    self._keyframes, self._boxes, self._scores = [], [], []
    self._seen = set()

  def add(self, out: Mapping[str, np.ndarray]) -> None:
    real = out['box_mask'].astype(bool) & out['mask'].astype(bool)[:, None]
    for row in np.flatnonzero(real.any(axis=1)):
      index = int(out['keyframe_index'][row])
      if index in self._seen:
        continue
      self._seen.add(index)
      keep = real[row]
      self._keyframes.append(np.full(int(keep.sum()), index, np.int64))
      self._boxes.append(out['original_boxes'][row][keep])
      self._scores.append(out['scores'][row][keep])

  @property
  def num_keyframes(self) -> int:
    return len(self._seen)

  def result(self, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keyframe indices (M,) int64, boxes (M, 4) float32, scores (M, K) float32), in the order seen."""
    if not self._keyframes:
      return np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros((0, num_classes), np.float32)
    return (np.concatenate(self._keyframes), np.concatenate(self._boxes).astype(np.float32),
            np.concatenate(self._scores).astype(np.float32))


def detections_path(workdir: str, step: int) -> str:
  return storage.join(workdir, 'eval', f'detections_{step}.csv')


def score(data_config, detections: ava_eval.BoxRows) -> tuple[float, dict[str, float]]:
  """(mAP, {action name: AP}) in percent of detection rows against the config's ground truth, label map classes and
  exclusions, every detection of a keyframe kept (PySlowFast's rule, the papers' numbers): what
  `python -m mvit_jax.ava_eval` reports (as fractions) for the same files."""
  names, class_ids = ava_eval.read_labelmap(ava.annotation_path(data_config, 'ava_label_map'))
  groundtruth = ava_eval.read_groundtruth(ava.annotation_path(data_config, 'ava_val_gt'), class_ids)
  exclusions_path = ava.annotation_path(data_config, 'ava_exclusions')
  exclusions = ava_eval.read_exclusions(exclusions_path) if exclusions_path else set()
  mean_ap, per_class = ava_eval.frame_map(groundtruth, detections, class_ids, exclusions)
  return 100 * mean_ap, {names[c]: 100 * ap for c, ap in per_class.items()}


def run_eval(predict_fn, params, batches: Iterable[Mapping[str, np.ndarray]], mesh: jax.sharding.Mesh, *,
             data_config, step: int, workdir: str, writer=None) -> dict[str, float]:
  """Runs the detector over the (finite) eval iterator, writes WORKDIR/eval/detections_{step}.csv
  (`video_id,sec,x1,y1,x2,y2,action_id,score` for every real box x class, boxes normalised to the original frame)
  and scores that file's rows (`score`); metrics.json gets `mAP` and `per_class_AP` (percent, by action name).
  Returns {'mAP', 'num_keyframes', 'num_boxes'} on every process; process 0 writes and scores, the others get its
  mAP. With a clu `writer`: the text table 'eval/per_class_AP'."""
  collector = BoxCollector()
  for batch in batches:
    collector.add(predict_fn(params, sharding_lib.global_batch(batch, mesh)))
  num_classes = ava.num_classes_from_config(data_config)
  indices, boxes, scores = collector.result(num_classes)
  metrics = {'num_keyframes': collector.num_keyframes, 'num_boxes': len(indices)}
  mean_ap, per_class = math.nan, {}
  if jax.process_index() == 0:
    keyframes = ava.keyframe_list(data_config, 'eval')
    rows = ava_eval.detection_rows([keyframes[i][0] for i in indices], [keyframes[i][1] for i in indices], boxes,
                                   scores, range(1, num_classes + 1))  # Every box x class, as PySlowFast writes.
    path = detections_path(workdir, step)
    mean_ap, per_class = score(data_config, ava_eval.write_detections(path, rows))  # The file's rows, as read back.
    record = {'step': step, 'mAP': mean_ap, **metrics, 'detections': path, 'per_class_AP': per_class}
    storage.write_text(storage.join(workdir, 'metrics.json'), evaluate.json_key_per_line(record))
  if jax.process_count() > 1:
    mean_ap = float(multihost_utils.broadcast_one_to_all(np.float64(mean_ap)))
  metrics = {'mAP': mean_ap, **metrics}
  logging.info('Detection eval at step %d over %d keyframes, %d boxes: mAP %.2f', step, metrics['num_keyframes'],
               metrics['num_boxes'], mean_ap)
  if writer is not None and per_class:
    writer.write_texts(step, {'eval/per_class_AP': _ap_table(per_class)})
  return metrics


def _ap_table(per_class: Mapping[str, float]) -> str:
  """Markdown table of the per-class APs, highest first."""
  rows = sorted(per_class.items(), key=lambda kv: -kv[1])
  return '\n'.join(['| action | AP (%) |', '| --- | ---: |'] + [f'| {name} | {ap:.2f} |' for name, ap in rows])
