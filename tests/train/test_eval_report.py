"""The eval's pictures and table: confusion counts, per-class accuracy, the clip sample, and what the trainer's
TensorBoard events hold after a tiny eval (read back from the event files)."""
import io
import json

import numpy as np
from PIL import Image

from mvit_jax.data import render
from mvit_jax.train import eval_report
from mvit_jax.train import evaluate
from mvit_jax.train import sharding as sharding_lib


def test_confusion_matrix_and_per_class_accuracy_by_hand():
  confusion = eval_report.confusion_matrix(np.array([0, 0, 0, 2, 2, 1]), np.array([0, 2, 0, 2, 1, 1]), 4)
  np.testing.assert_array_equal(confusion, [[2, 0, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
  np.testing.assert_allclose(eval_report.per_class_accuracy(confusion), [200 / 3, 100, 50, np.nan])
  np.testing.assert_array_equal(eval_report.top_classes(confusion, 2), [0, 2])  # 3 and 2 videos; class 1 has 1.
  table = eval_report.accuracy_table(confusion, ['run', 'jump', 'swim', 'fly']).splitlines()
  assert table[2:] == ['| 0 run | 3 | 2 | 66.7 |', '| 1 jump | 1 | 1 | 100.0 |', '| 2 swim | 2 | 1 | 50.0 |',
                       '| 3 fly | 0 | 0 | - |']


def test_clip_sampler_keeps_three_frames_of_the_first_view_of_each_class():
  video = np.arange(7 * 5).reshape(7, 5, 1, 1, 1).repeat(3, -1).astype(np.uint8) * np.ones((1, 1, 2, 2, 1), np.uint8)
  labels, ids = np.array([0, 0, 0, 0, 2, 1, 3]), np.array([4, 4, 5, 5, 9, 8, 7])
  sampler = eval_report.ClipSampler(3)
  sampler.add(video, labels, ids, np.array([False, True, True, True, True, True, True]))
  ids, frames = sampler.result()
  np.testing.assert_array_equal(ids, [4, 9, 8])  # Padding, a second class-0 video and the fourth class left out.
  np.testing.assert_array_equal([f[:, 0, 0, 0] for f in frames], [[5, 7, 9], [20, 22, 24], [25, 27, 29]])


def test_confusion_picture_shows_the_classes_with_most_videos():
  confusion = np.diag([5, 1, 9, 3])
  picture = eval_report.confusion_picture(confusion, None, max_classes=2)
  cell = 24
  # Two classes (2 and 0): two rows of cells under a title line and a column-label line.
  assert picture.shape[0] == 2 * render.TITLE_HEIGHT + 2 * cell and picture.dtype == np.uint8
  assert eval_report.confusion_picture(confusion, None, 10).shape[0] == 2 * render.TITLE_HEIGHT + 4 * cell


def _tensorboard(logdir: str) -> dict:
  """Tag -> (step, value) of the tensors in the event files under logdir (TF2 summaries are tensors)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  accumulator = event_accumulator.EventAccumulator(
      logdir, size_guidance=event_accumulator.STORE_EVERYTHING_SIZE_GUIDANCE)
  accumulator.Reload()
  return {tag: accumulator.Tensors(tag)[-1] for tag in accumulator.Tags()['tensors']}


def _png(event) -> np.ndarray:
  """The first image of a tf.summary.image tensor event: [width, height, png, ...] strings."""
  width, height, png = event.tensor_proto.string_val[:3]
  image = np.asarray(Image.open(io.BytesIO(png)))
  assert image.shape[:2] == (int(height), int(width))
  return image


def test_tiny_eval_writes_pictures_and_table_to_tensorboard(tmp_path):
  from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports tensorflow)
  mesh = sharding_lib.make_mesh({'data': 8, 'fsdp': 1, 'model': 1})
  labels = np.arange(16) % 4
  scores = np.eye(4, dtype=np.float32)[np.where(labels == 3, 1, labels)]  # Class 3 is taken for class 1.
  video = np.random.default_rng(0).integers(0, 256, (16, 4, 8, 8, 3), np.uint8)
  batches = [{'scores': scores[i:i + 8], 'label': labels[i:i + 8].astype(np.int32), 'video': video[i:i + 8],
              'video_index': np.arange(i, i + 8), 'mask': np.ones(8, bool)} for i in (0, 8)]
  writer = metric_writers.create_default_writer(str(tmp_path), asynchronous=False)
  evaluate.run_eval(lambda p, b: {k: np.asarray(v) for k, v in b.items()}, None, batches, mesh, multi_label=False,
                    step=3, workdir=str(tmp_path), writer=writer, class_names=['run', 'jump', 'swim', 'fly'],
                    image_clips=3, confusion_classes=3)
  writer.close()

  events = _tensorboard(str(tmp_path))
  assert {'eval/clips', 'eval/confusion_matrix', 'eval/per_class_accuracy'} <= set(events)
  assert all(events[t].step == 3 for t in ('eval/clips', 'eval/confusion_matrix', 'eval/per_class_accuracy'))
  clips = _png(events['eval/clips'])
  cell = eval_report.CLIP_CELL  # 8x8 frames enlarged 14x; 3 clips x (title + frame), 3 frames each.
  assert clips.shape == (3 * (render.TITLE_HEIGHT + cell + render.GAP), 3 * (cell + render.GAP), 3)
  first = render.TITLE_HEIGHT
  np.testing.assert_array_equal(clips[first:first + cell, :cell], render.enlarge(video[0, 0], cell))
  np.testing.assert_array_equal(clips[first:first + cell, 2 * (cell + render.GAP):][:, :cell],
                                render.enlarge(video[0, 3], cell))  # The last frame.
  confusion = _png(events['eval/confusion_matrix'])
  assert confusion.shape[0] == 2 * render.TITLE_HEIGHT + 3 * 24  # Top 3 of 4 classes (4 videos each: 0, 1, 2).
  text = events['eval/per_class_accuracy'].tensor_proto.string_val[0].decode()
  assert '| 1 jump | 4 | 4 | 100.0 |' in text and '| 3 fly | 4 | 0 | 0.0 |' in text
  with open(tmp_path / 'metrics.json') as f:
    saved = json.load(f)
  assert saved['confusion_matrix'][3] == [0, 4, 0, 0] and saved['per_class_accuracy'] == [100, 100, 100, 0]

