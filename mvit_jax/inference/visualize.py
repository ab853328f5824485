"""predict --visualize: per video an mp4 and a contact-sheet PNG of the first view's frames under the Grad-CAM
heatmap, with the top classes and scores (the pictures are `mvit_jax.data.render`'s)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mvit_jax.data import render
from mvit_jax.system import errors
from mvit_jax.system import storage

FRAME_SIZE = 224  # Frames are enlarged (nearest) to at least this many pixels, so small clips can be seen.
SHEET_CELL = 112  # The same for the contact sheet's cells.


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


def write(out_dir: str, number: int, video: str, frames: np.ndarray, heat: np.ndarray, top: Sequence[dict],
          explained: str, fps: float) -> dict[str, str]:
  """Writes out_dir/NUMBER_STEM.mp4 and .png (local or URL) for uint8 frames (T, H, W, 3), heat (T, H, W) in
  [0, 1], the top classes (predict.top_k's entries) and the explained class's name; returns their file names."""
  lines = [f'{t["probability"]:.3f}  {t["class"] if t["class"] is not None else t["index"]}' for t in top]
  lines += ['', f'heatmap: {explained}']
  overlay = render.overlay_heatmap(frames, heat)
  big = render.enlarge(overlay, FRAME_SIZE)
  text = render.text_block(lines, height=big.shape[1])
  stem = f'{number:06d}_{storage.name(video).rsplit(".", 1)[0]}'
  names = {'mp4': f'{stem}.mp4', 'sheet': f'{stem}.png'}
  render.write_mp4(storage.join(out_dir, names['mp4']), np.stack([render.hstack([f, text]) for f in big]), fps)
  grid = render.frames_grid([frames, overlay], ['sampled frames', f'Grad-CAM: {explained}'], SHEET_CELL)
  sheet = render.vstack([grid, render.text_block([storage.name(video)] + lines)])
  storage.write_bytes(storage.join(out_dir, names['sheet']), render.encode_image(sheet, names['sheet']))
  return names
