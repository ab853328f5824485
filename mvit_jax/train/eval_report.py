"""What the trainer's evaluation shows besides its scalars: a grid of validation clips with their true and predicted
classes, the confusion matrix (counts, and a picture of the classes with the most videos) and per-class accuracy
(percent, and a markdown table). The clips are frames of the eval batches already on the host: nothing is decoded
again.
"""
from collections.abc import Sequence

import numpy as np

from mvit_jax.data import render

CLIP_CELL = 112  # Pixels: small crops are enlarged to this for viewing, and titles fit above three frames.


class ClipSampler:
  """Keeps the first, middle and last frame of the first view of the first video of each label seen, for up to
  `max_clips` videos: eval sets are often sorted by class, and one clip per class shows more than the first few."""

  def __init__(self, max_clips: int):
    self.max_clips = max_clips
    self._frames: dict[int, np.ndarray] = {}
    self._labels: set[bytes] = set()

  def add(self, video: np.ndarray, label: np.ndarray, video_index: np.ndarray, mask: np.ndarray) -> None:
    """video (B, T, H, W, 3) uint8 views, label (B,) int or (B, C) multi-hot, video_index (B,), mask (B,) bool
    (False = padding)."""
    for i in np.flatnonzero(mask):
      if len(self._frames) >= self.max_clips:
        return
      key = np.asarray(label[i]).tobytes()
      if key not in self._labels:
        self._labels.add(key)
        t = video.shape[1]
        self._frames[int(video_index[i])] = np.array(video[i, [0, t // 2, t - 1]])

  def result(self) -> tuple[np.ndarray, list[np.ndarray]]:
    """(video ids (K,), K arrays of (3, H, W, 3) uint8 frames), in the order seen."""
    return np.array(list(self._frames), dtype=np.int64), list(self._frames.values())


def class_name(index: int, names: Sequence[str] | None) -> str:
  """'3 jumping' with names, '3' without."""
  return f'{index} {names[index]}' if names else str(index)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
  """(C, C) int64 video counts: row = true class, column = predicted class. labels, predicted (N,) int."""
  pairs = np.asarray(labels, np.int64) * num_classes + np.asarray(predicted, np.int64)
  return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
  """(C,) float64: percent of each class's videos predicted as that class; NaN for a class without videos."""
  support = confusion.sum(axis=1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(support > 0, 100.0 * np.diag(confusion) / support, np.nan)


def top_classes(confusion: np.ndarray, n: int) -> np.ndarray:
  """The n classes with the most videos (ties: lower index first), in class order."""
  order = np.argsort(-confusion.sum(axis=1), kind='stable')
  return np.sort(order[:n])


def accuracy_table(confusion: np.ndarray, names: Sequence[str] | None) -> str:
  """Markdown table, one row per class: class, videos, correct, accuracy (%) ('-' without videos)."""
  lines = ['| class | videos | correct | accuracy (%) |', '|---|---:|---:|---:|']
  for c, accuracy in enumerate(per_class_accuracy(confusion)):
    shown = '-' if np.isnan(accuracy) else f'{accuracy:.1f}'
    lines.append(f'| {class_name(c, names)} | {confusion[c].sum()} | {confusion[c, c]} | {shown} |')
  return '\n'.join(lines)


def confusion_picture(confusion: np.ndarray, names: Sequence[str] | None, max_classes: int) -> np.ndarray:
  """uint8 (H, W, 3): the confusion matrix of the `max_classes` classes with the most videos (all when fewer)."""
  shown = top_classes(confusion, max_classes)
  part = f'top {len(shown)} of {len(confusion)} classes by videos; ' if len(shown) < len(confusion) else ''
  return render.count_matrix(confusion[np.ix_(shown, shown)], [class_name(c, names) for c in shown],
                             [str(c) for c in shown], title=f'{part}rows: true, columns: predicted')


def clip_grid(frames: Sequence[np.ndarray], true: Sequence[str], predicted: Sequence[str]) -> np.ndarray:
  """uint8 (H, W, 3): one row per clip (its (3, H, W, 3) first, middle and last frames) under 'true X | pred Y'."""
  titles = [f'true {t} | pred {p}' for t, p in zip(true, predicted)]
  return render.frames_grid(frames, titles, min_cell=CLIP_CELL)
