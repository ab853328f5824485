"""Pictures of clips for people: frame grids with titles, text blocks, heatmap overlays, PNG bytes and mp4 files.

Plain arrays in and out: frames are uint8 (..., H, W, 3) RGB, every picture returned is uint8 (H, W, 3) (or the
frames' shape), so the same functions serve files, TensorBoard images and detection pictures (boxes with labels).
Pillow draws the text and the boxes, OpenCV maps heatmaps to colours, PyAV encodes the mp4 (frame by frame:
`Mp4Writer`).
"""
from __future__ import annotations

from collections.abc import Sequence
import fractions
import io
import os
import tempfile

import av
import cv2
import numpy as np
from PIL import Image
from PIL import ImageDraw

from mvit_jax.system import storage

TITLE_HEIGHT = 14  # Pixels of a title or text line: Pillow's default font (10 px) reaches 12 px down.
GAP = 2  # Pixels of background between cells.
# Box colours, one per box in turn (the Tableau 10 palette: distinct, and white text reads on each).
BOX_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def enlarge(frames: np.ndarray, min_size: int) -> np.ndarray:
  """uint8 (..., H, W, 3) -> (..., k H, k W, 3), repeated pixels (nearest), with the smallest integer k >= 1 that
  makes max(H, W) at least `min_size`: small clips stay sharp when viewed."""
  k = max(1, -(-min_size // max(frames.shape[-3:-1])))
  return frames.repeat(k, axis=-3).repeat(k, axis=-2) if k > 1 else frames


def frames_grid(rows: Sequence[np.ndarray], titles: Sequence[str] | None = None, min_cell: int = 0) -> np.ndarray:
  """Rows of frames (each (T_r, H, W, 3) uint8, one size) -> uint8 (R (TITLE_HEIGHT + h + GAP), max T_r (w + GAP),
  3) on white: row r holds its frames left to right under titles[r] (no title line without titles); frames are
  enlarged to (h, w) = enlarge(..., min_cell)'s."""
  rows = [enlarge(np.asarray(r), min_cell) for r in rows]
  h, w = rows[0].shape[1:3]
  title = TITLE_HEIGHT if titles is not None else 0
  sheet = Image.new('RGB', (max(len(r) for r in rows) * (w + GAP), len(rows) * (title + h + GAP)), 'white')
  draw = ImageDraw.Draw(sheet)
  for i, row in enumerate(rows):
    top = i * (title + h + GAP)
    if titles is not None:
      draw.text((2, top + 1), titles[i], fill='black')
    for j, frame in enumerate(row):
      sheet.paste(Image.fromarray(frame), (j * (w + GAP), top + title))
  return np.asarray(sheet)


def text_block(lines: Sequence[str], width: int | None = None, height: int | None = None) -> np.ndarray:
  """uint8 (height or TITLE_HEIGHT len(lines), width, 3): the lines in black on white, one per TITLE_HEIGHT px;
  width None fits the longest line, and what does not fit is cut."""
  if width is None:
    measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    width = 4 + max((int(np.ceil(measure.textlength(line))) for line in lines), default=0)
  image = Image.new('RGB', (width, TITLE_HEIGHT * len(lines) if height is None else height), 'white')
  draw = ImageDraw.Draw(image)
  for i, line in enumerate(lines):
    draw.text((2, i * TITLE_HEIGHT + 1), line, fill='black')
  return np.asarray(image)


def overlay_heatmap(frames: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """uint8 frames (..., H, W, 3) and heat (..., H, W) in [0, 1] -> uint8 (..., H, W, 3): (1 - alpha) frame +
  alpha JET colour of the heat (blue 0, red 1)."""
  heat = np.broadcast_to(heat, frames.shape[:-1])
  levels = np.clip(np.rint(heat * 255), 0, 255).astype(np.uint8).reshape(-1, 1)
  colours = cv2.applyColorMap(levels, cv2.COLORMAP_JET)[:, 0, ::-1].reshape(frames.shape)  # BGR -> RGB.
  return np.rint((1 - alpha) * frames + alpha * colours).astype(np.uint8)


def box_colour(i: int) -> tuple[int, int, int]:
  """RGB colour of box i (BOX_COLOURS in turn)."""
  return BOX_COLOURS[i % len(BOX_COLOURS)]


def draw_boxes(frames: np.ndarray, boxes: np.ndarray, labels: Sequence[str] | None = None,
               width: int = 2) -> np.ndarray:
  """uint8 frames (..., H, W, 3) and boxes (n, 4) (x1, y1, x2, y2) normalised to the frame -> a copy with box i
  outlined `width` px wide in box_colour(i), inside the box, and labels[i] written in white on that colour above
  its top-left corner (below it when the box touches the top edge). Parts outside the frame are not drawn."""
  frames = np.asarray(frames)
  height, frame_width = frames.shape[-3:-1]
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  # Pixel edges: x1 * W is the box's left edge; its last column is ceil(x2 * W) - 1.
  left = np.floor(np.clip(boxes[:, 0], 0, 1) * frame_width).astype(int)
  top = np.floor(np.clip(boxes[:, 1], 0, 1) * height).astype(int)
  right = np.maximum(np.ceil(np.clip(boxes[:, 2], 0, 1) * frame_width).astype(int) - 1, left)
  bottom = np.maximum(np.ceil(np.clip(boxes[:, 3], 0, 1) * height).astype(int) - 1, top)
  measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  out = np.empty_like(frames)
  for index in np.ndindex(frames.shape[:-3]):
    image = Image.fromarray(frames[index])
    draw = ImageDraw.Draw(image)
    for i in range(len(boxes)):
      colour = box_colour(i)
      draw.rectangle((left[i], top[i], right[i], bottom[i]), outline=colour, width=width)
      if labels is not None and labels[i]:
        text_width = 4 + int(np.ceil(measure.textlength(labels[i])))
        y = top[i] - TITLE_HEIGHT if top[i] >= TITLE_HEIGHT else top[i] + width
        draw.rectangle((left[i], y, left[i] + text_width - 1, y + TITLE_HEIGHT - 1), fill=colour)
        draw.text((left[i] + 2, y + 1), labels[i], fill='white')
    out[index] = np.asarray(image)
  return out


def hstack(images: Sequence[np.ndarray]) -> np.ndarray:
  """uint8 (H_i, W_i, 3) pictures side by side, top-aligned on white, GAP px apart -> (max H_i, sum W_i + gaps, 3)."""
  height = max(image.shape[0] for image in images)
  padded = []
  for i, image in enumerate(images):
    padded.append(np.pad(image, ((0, height - image.shape[0]), (0, GAP if i < len(images) - 1 else 0), (0, 0)),
                         constant_values=255))
  return np.concatenate(padded, axis=1)


def vstack(images: Sequence[np.ndarray]) -> np.ndarray:
  """uint8 (H_i, W_i, 3) pictures one under another, left-aligned on white, GAP px apart."""
  return np.swapaxes(hstack([np.swapaxes(image, 0, 1) for image in images]), 0, 1)


def encode_image(image: np.ndarray | Image.Image, path: str) -> bytes:
  """The file bytes of `image` (uint8 (H, W, 3) or PIL) in the format `path`'s extension names (PNG when it names
  none)."""
  if isinstance(image, np.ndarray):
    image = Image.fromarray(image)
  buffer = io.BytesIO()
  extension = os.path.splitext(storage.name(path))[1].lower()
  image.save(buffer, format=Image.registered_extensions().get(extension, 'PNG'))
  return buffer.getvalue()


def write_mp4(path: str, frames: np.ndarray, fps: float) -> None:
  """Writes uint8 frames (N, H, W, 3) to an H.264 mp4 at `path` (local or URL), one video frame each; odd sizes
  get a white row / column (4:2:0 chroma needs even ones)."""
  with Mp4Writer(path, fps) as writer:
    writer.write(frames)


class Mp4Writer:
  """An H.264 mp4 (x264 crf 18) at `path` (local or URL) written frame by frame, so a long video need not be held
  in memory: `write` takes uint8 frames (H, W, 3) or (N, H, W, 3), all of one size (odd sizes get a white row /
  column: 4:2:0 chroma needs even ones). The file appears when the writer closes (a URL's is encoded into a local
  temporary file, then uploaded), and only if a frame was written."""

  def __init__(self, path: str, fps: float):
    self.path, self.fps, self.num_frames = path, fps, 0
    self._tmp = tempfile.TemporaryDirectory() if storage.is_url(path) else None
    self._local = os.path.join(self._tmp.name, storage.name(path)) if self._tmp is not None else path
    self._container = self._stream = None

  def write(self, frames: np.ndarray) -> None:
    frames = np.asarray(frames)
    frames = frames[None] if frames.ndim == 3 else frames
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)),
                    constant_values=255)
    if self._container is None:
      self._container = av.open(self._local, 'w')
      self._stream = self._container.add_stream('libx264', rate=fractions.Fraction(self.fps).limit_denominator(1001))
      self._stream.height, self._stream.width = frames.shape[1:3]
      self._stream.pix_fmt = 'yuv420p'
      self._stream.options = {'preset': 'ultrafast', 'crf': '18'}
    for frame in frames:
      self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    self.num_frames += len(frames)

  def close(self) -> None:
    try:
      if self._container is not None:
        self._container.mux(self._stream.encode())
        self._container.close()
        self._container = None
        if self._tmp is not None:
          storage.copy_file(self._local, self.path)
    finally:
      if self._tmp is not None:
        self._tmp.cleanup()
        self._tmp = None

  def __enter__(self) -> Mp4Writer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def count_matrix(counts: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], cell: int = 24,
                 title: str = '') -> np.ndarray:
  """A count matrix (R, C) -> uint8 (H, W, 3) picture: cell (i, j) holds counts[i, j] and is shaded by its share of
  row i's sum (white 0, dark blue 1), row_labels left of the rows, col_labels above the columns (short ones: a
  cell is `cell` px wide), `title` on top."""
  counts = np.asarray(counts)
  shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
  measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  left = 6 + max(int(np.ceil(measure.textlength(label))) for label in row_labels)
  top = (TITLE_HEIGHT if title else 0) + TITLE_HEIGHT
  image = Image.new('RGB', (left + counts.shape[1] * cell, top + counts.shape[0] * cell), 'white')
  draw = ImageDraw.Draw(image)
  draw.text((2, 1), title, fill='black')
  for j, label in enumerate(col_labels):
    draw.text((left + j * cell + 2, top - TITLE_HEIGHT + 1), label, fill='black')
  for i, label in enumerate(row_labels):
    y = top + i * cell
    draw.text((2, y + (cell - TITLE_HEIGHT) // 2 + 1), label, fill='black')
    for j in range(counts.shape[1]):
      share = float(shares[i, j])
      colour = (int(255 * (1 - share)), int(255 * (1 - 0.7 * share)), int(255 - 115 * share))
      box = (left + j * cell, y, left + (j + 1) * cell - 1, y + cell - 1)
      draw.rectangle(box, fill=colour, outline=(220, 220, 220))
      if counts[i, j]:
        draw.text((box[0] + 2, y + (cell - TITLE_HEIGHT) // 2 + 1), str(int(counts[i, j])),
                  fill='white' if share > 0.5 else 'black')
  return np.asarray(image)
