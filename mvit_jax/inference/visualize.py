"""predict --visualize: per video an mp4 and a contact-sheet PNG of the first view's frames under the class
heatmap (mvit_jax.inference.explain), with the top classes and scores; for a detector (predict --boxes), of each
keyframe's clip with its boxes and their top actions (`DetectionVideo`). The pictures are `mvit_jax.data.render`'s."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mvit_jax.data import render
from mvit_jax.inference import detect
from mvit_jax.system import errors
from mvit_jax.system import storage

FRAME_SIZE = 224  # Frames are enlarged (nearest) to at least this many pixels, so small clips can be seen.
SHEET_CELL = 112  # The same for the contact sheet's cells.
SHEET_KEYFRAMES = 4  # Keyframes (rows) of a detection contact sheet: the video's first ones.
TEXT_WIDTH = 280  # Pixels of the text beside a detection video's frames (fixed: every mp4 frame has one size).


def explain_class(text: str, class_names: Sequence[str] | None, num_classes: int) -> int:
  """The class index `text` names: a class name of the model card, or an index in [0, num_classes)."""
  if class_names is not None and text in class_names:
    return list(class_names).index(text)
  if text.isdigit() and int(text) < num_classes:
    return int(text)
  hint = errors.did_you_mean(text, class_names) if class_names is not None else ''
  raise errors.InputError(f'--explain_class {text!r}: not a class name or an index below {num_classes}{hint}')


def playback_fps(data_config) -> float:
  """Frames per second that play the sampled frames at the speed of the video they come from."""
  return (data_config.target_fps or 30.0) / data_config.sampling_rate


def _stem(number: int, video: str) -> str:
  return f'{number:06d}_{storage.name(video).rsplit(".", 1)[0]}'


def write(out_dir: str, number: int, video: str, frames: np.ndarray, heat: np.ndarray, top: Sequence[dict],
          explained: str, fps: float, method: str) -> dict[str, str]:
  """Writes out_dir/NUMBER_STEM.mp4 and .png (local or URL) for uint8 frames (T, H, W, 3), heat (T, H, W) in
  [0, 1], the top classes (predict.top_k's entries), the explained class's name and the heatmap's method (its
  title); returns their file names."""
  lines = [f'{t["probability"]:.3f}  {t["class"] if t["class"] is not None else t["index"]}' for t in top]
  lines += ['', f'heatmap: {explained}']
  overlay = render.overlay_heatmap(frames, heat)
  big = render.enlarge(overlay, FRAME_SIZE)
  text = render.text_block(lines, height=big.shape[1])
  stem = _stem(number, video)
  names = {'mp4': f'{stem}.mp4', 'sheet': f'{stem}.png'}
  render.write_mp4(storage.join(out_dir, names['mp4']), np.stack([render.hstack([f, text]) for f in big]), fps)
  grid = render.frames_grid([frames, overlay], ['sampled frames', f'{method}: {explained}'], SHEET_CELL)
  sheet = render.vstack([grid, render.text_block([storage.name(video)] + lines)])
  storage.write_bytes(storage.join(out_dir, names['sheet']), render.encode_image(sheet, names['sheet']))
  return names


def action_name(action: dict) -> str:
  """A top_actions entry's name: the card's class name, else 'id N'."""
  return action['action'] if action['action'] is not None else f'id {action["id"]}'


class DetectionVideo:
  """predict --boxes --visualize for one video: out_dir/NUMBER_STEM.mp4, every keyframe's clip (its test view,
  enlarged to at least FRAME_SIZE px) keyframe after keyframe, each box outlined in its colour with its number and
  top action above it and the top-k actions of every box beside the frames; out_dir/NUMBER_STEM.png, a contact sheet
  of the first SHEET_KEYFRAMES keyframes (their clips' frames with the boxes, and the same lists).

      video = DetectionVideo(out_dir, number, path, class_names, fps, topk)
      for result in results: video.add(result)   # detect.KeyframeResult with its clip (keep_clips=True)
      names = video.close()                      # {'mp4', 'sheet'}, or None when no keyframe was added
  """

  def __init__(self, out_dir: str, number: int, video: str, class_names: Sequence[str] | None, fps: float,
               topk: int = 3):
    self._top = lambda scores: detect.top_actions(scores, class_names, topk)
    stem = _stem(number, video)
    self.names = {'mp4': f'{stem}.mp4', 'sheet': f'{stem}.png'}
    self.out_dir, self.video_id = out_dir, detect.video_id(video)
    self._mp4 = render.Mp4Writer(storage.join(out_dir, self.names['mp4']), fps)
    self._rows, self._titles, self._lines = [], [], []

  def add(self, result) -> None:
    """Draws one keyframe (a detect.KeyframeResult with clip, view_boxes and scores)."""
    tops = [self._top(scores) for scores in result.scores]
    labels = [f'{i} {action_name(top[0])} {top[0]["score"]:.2f}' for i, top in enumerate(tops)]
    lines = [f'{self.video_id}  second {result.sec}']
    for i, top in enumerate(tops):
      shown = ', '.join(f'{action_name(t)} {t["score"]:.2f}' for t in top)
      cut = '' if result.visible[i] >= 1 else f' ({result.visible[i]:.0%} in view)'
      lines.append(f'{i}: {shown}{cut}')
    frames = render.draw_boxes(render.enlarge(result.clip, FRAME_SIZE), result.view_boxes, labels)
    text = render.text_block(lines, width=TEXT_WIDTH, height=frames.shape[1])
    self._mp4.write(np.stack([render.hstack([frame, text]) for frame in frames]))
    if len(self._rows) < SHEET_KEYFRAMES:
      self._rows.append(render.draw_boxes(render.enlarge(result.clip, SHEET_CELL), result.view_boxes,
                                          [str(i) for i in range(len(tops))]))
      self._titles.append(f'{self.video_id} second {result.sec}')
      self._lines += lines + ['']

  def close(self) -> dict[str, str] | None:
    """Finishes the mp4 and writes the contact sheet; their file names, None when no keyframe was added."""
    self._mp4.close()
    if not self._rows:
      return None
    sheet = render.vstack([render.frames_grid(self._rows, self._titles), render.text_block(self._lines)])
    storage.write_bytes(storage.join(self.out_dir, self.names['sheet']), render.encode_image(sheet, 'x.png'))
    return self.names
