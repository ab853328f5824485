"""Clip transforms that carry person boxes along, as PySlowFast's AVA loader applies them (its default cv2 path,
`ava_dataset._images_and_boxes_preprocessing_cv2`), on uint8 clips (T, H, W, 3) and boxes (n, 4) x1, y1, x2, y2
normalised to the frame they lie on.

Train: short side to a random scale in train_jitter_scales (1/scale drawn uniformly: PySlowFast's cv2
`random_short_side_scale_jitter_list`), a random crop_size crop, a horizontal flip with probability 0.5; boxes follow
and are clipped to the crop, so a box that leaves the crop keeps its clipped part (possibly of zero width, kept as
PySlowFast keeps it). Test ('center', PySlowFast's 'val' split): short side to crop_size, centre crop; ('full',
its 'test' split): short side to crop_size, the whole frame.

Boxes are continuous coordinates (pixel edges at integers): a flip maps x to W - x and clipping is to [0, W].
PySlowFast flips to W - 1 - x and clips to W - 1 (the inclusive-pixel convention of Detectron) while scaling
by W, a shift of up to one pixel that RoIAlign's 'aligned' sampling does not expect; it also scales both axes by
the long side's factor, which the floored long side makes up to one pixel off. Here each axis scales by its own
factor (the two differ by up to 1.5 pixels at 224: tests/parity/test_ava_data_parity.py). Resizing and cropping
reuse data/transforms.py (one bilinear warp from the source pixels).
"""
import numpy as np

from mvit_jax.data import config as data_config_lib
from mvit_jax.data import transforms



def window_boxes(boxes: np.ndarray, shape: tuple[int, int], window: transforms.Box) -> np.ndarray:
  """Boxes (n, 4) normalised to a frame -> normalised to `window` (top, left, height, width) of that frame resized
  to `shape` (h, w), clipped to the window. float32 (n, 4)."""
  top, left, height, width = window
  scale = np.array([shape[1], shape[0], shape[1], shape[0]], np.float64)
  pixels = np.asarray(boxes, np.float64) * scale - np.array([left, top, left, top])
  pixels = np.clip(pixels, 0, np.array([width, height, width, height]))
  return (pixels / np.array([width, height, width, height])).astype(np.float32)


def flip_boxes(boxes: np.ndarray) -> np.ndarray:
  """Normalised boxes (n, 4) of a frame mirrored left-right: x1, x2 -> 1 - x2, 1 - x1."""
  boxes = np.asarray(boxes, np.float32)
  return np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1)


def train_clip(frames: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, cfg) -> tuple[np.ndarray, np.ndarray]:
  """(T, H, W, 3) uint8 and boxes (n, 4) normalised to it -> (T, crop, crop, 3) uint8 and boxes (n, 4) float32
  normalised to the crop. Reads cfg.train_jitter_scales, crop_size, random_flip."""
  boxes = np.clip(boxes, 0, 1)
  shape, window = transforms.sample_short_side_jitter_box(rng, frames.shape[1], frames.shape[2], cfg.crop_size,
                                                          cfg.train_jitter_scales, inverse_uniform=True)
  frames = transforms.resized_window(frames, shape, window)
  boxes = window_boxes(boxes, shape, window)
  if cfg.random_flip and rng.random() < 0.5:
    frames, boxes = transforms.horizontal_flip(frames), flip_boxes(boxes)
  return np.ascontiguousarray(frames), boxes


def eval_shape(height: int, width: int, cfg) -> tuple[int, int]:
  """(h, w) of the test view of (height, width) frames: (crop, crop) for 'center', the short side scaled to crop
  (long side floored, as PySlowFast) for 'full'."""
  if cfg.ava_test_view == 'center':
    return cfg.crop_size, cfg.crop_size
  if cfg.ava_test_view == 'full':
    return transforms.short_side_shape(height, width, cfg.crop_size)
  raise ValueError(f'ava_test_view must be one of {data_config_lib.AVA_TEST_VIEWS}, got {cfg.ava_test_view!r}')


def eval_clip(frames: np.ndarray, boxes: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
  """(T, H, W, 3) uint8 and boxes (n, 4) normalised to it -> the test view (T, *eval_shape, 3) uint8 and boxes
  float32 (n, 4) normalised to it. Reads cfg.crop_size, ava_test_view."""
  eval_shape(frames.shape[1], frames.shape[2], cfg)  # Checks ava_test_view.
  shape = transforms.short_side_shape(frames.shape[1], frames.shape[2], cfg.crop_size)
  if cfg.ava_test_view == 'full':
    return np.ascontiguousarray(transforms.resize(frames, *shape)), np.clip(boxes, 0, 1).astype(np.float32)
  window = transforms.uniform_crop_box(shape[0], shape[1], cfg.crop_size, 1)
  frames = transforms.resized_window(frames, shape, window)
  return np.ascontiguousarray(frames), window_boxes(np.clip(boxes, 0, 1), shape, window)
