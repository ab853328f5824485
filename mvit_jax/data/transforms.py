"""Host-side clip transforms on uint8 clips (T, H, W, 3), as PySlowFast's Kinetics loader applies them.

Train order (`train_transform`): RandAugment (one op sequence, one set of magnitudes for the whole clip) ->
random-resized crop, or short-side jitter + random crop -> horizontal flip. The clips stay uint8 (4x fewer bytes
through grain's shared memory and to the accelerator than float32); normalisation and random erasing follow on
the accelerator (`mvit_jax.data.device_preprocess`). PySlowFast normalises before the spatial ops; normalisation
is per-channel affine and the bilinear weights sum to one, so doing it last, on the small crop, gives the same
values up to the uint8 rounding of the resized pixels (< 0.5 / 255).

Everything runs through OpenCV on whole clips or frame by frame: `cv2.resize` INTER_LINEAR is PyTorch's
`interpolate(mode='bilinear', align_corners=False)` that PySlowFast uses (no antialiasing) and is faster
than Pillow. RandAugment's ops are defined by Pillow (timm, which PySlowFast copies, calls Pillow); they are
re-implemented here with OpenCV LUTs, blends and affine warps following Pillow's formulas (the tests compare them
with Pillow), because Pillow's bicubic affine warp is several times slower (docs/performance.md).

All randomness comes from the `np.random.Generator` passed in, so a fixed seed gives a fixed result.
"""
import math
from typing import Callable, Sequence

import cv2
import numpy as np

# Each grain worker is one process; OpenCV's own thread pool would oversubscribe the cores.
cv2.setNumThreads(1)

Box = tuple[int, int, int, int]  # (top, left, height, width) in pixels.


def _check_clip(frames: np.ndarray) -> None:
  if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(
        'Clip transforms take a uint8 array (T, H, W, 3); got '
        f'{type(frames).__name__} {getattr(frames, "dtype", None)} {getattr(frames, "shape", None)}.')


# --- Geometry --------------------------------------------------------------------------------------------------


def short_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
  """(new_h, new_w) with the short side equal to `size`; PySlowFast floors the long side."""
  if width <= height:
    return int(math.floor(height / width * size)), size
  return size, int(math.floor(width / height * size))


def resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of every frame: (T, H, W, 3) uint8 -> (T, height, width, 3) uint8."""
  if frames.shape[1:3] == (height, width):
    return frames
  out = np.empty((frames.shape[0], height, width, 3), np.uint8)
  for t in range(frames.shape[0]):
    cv2.resize(frames[t], (width, height), dst=out[t], interpolation=cv2.INTER_LINEAR)
  return out


def resize_short_side(frames: np.ndarray, size: int) -> np.ndarray:
  """Resizes the short side to `size` keeping the aspect ratio: (T, H, W, 3) -> (T, H', W', 3) uint8."""
  _check_clip(frames)
  return resize(frames, *short_side_shape(frames.shape[1], frames.shape[2], size))


def crop(frames: np.ndarray, box: Box) -> np.ndarray:
  """The same (top, left, height, width) window of every frame (a view): (T, H, W, 3) -> (T, h, w, 3)."""
  top, left, height, width = box
  if top < 0 or left < 0 or top + height > frames.shape[1] or left + width > frames.shape[2]:
    raise ValueError(f'Crop box {box} does not fit in frames of size {frames.shape[1:3]}.')
  return frames[:, top:top + height, left:left + width]


def uniform_crop_box(height: int, width: int, size: int, spatial_idx: int) -> Box:
  """PySlowFast `uniform_crop`: 0/1/2 = left/centre/right (top/centre/bottom if H > W) `size` square."""
  if spatial_idx not in (0, 1, 2):
    raise ValueError(f'spatial_idx must be 0, 1 or 2, got {spatial_idx}.')
  if size > height or size > width:
    raise ValueError(f'Crop size {size} is larger than the frames ({height}, {width}).')
  top = int(math.ceil((height - size) / 2))
  left = int(math.ceil((width - size) / 2))
  if height > width:
    top = {0: 0, 1: top, 2: height - size}[spatial_idx]
  else:
    left = {0: 0, 1: left, 2: width - size}[spatial_idx]
  return top, left, size, size


def sample_random_resized_crop_box(
    rng: np.random.Generator, height: int, width: int, area: Sequence[float], aspect: Sequence[float]) -> Box:
  """Inception-style box (torchvision `RandomResizedCrop.get_params`, PySlowFast `_get_param_spatial_crop`).

  Area fraction uniform in `area`, aspect ratio w/h log-uniform in `aspect`; 10 tries, then the largest
  centred box whose aspect ratio is clamped into `aspect`.
  """
  frame_area = height * width
  log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
  for _ in range(10):
    target_area = frame_area * rng.uniform(area[0], area[1])
    ratio = math.exp(rng.uniform(*log_aspect))
    w = int(round(math.sqrt(target_area * ratio)))
    h = int(round(math.sqrt(target_area / ratio)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < min(aspect):
    w, h = width, int(round(width / min(aspect)))
  elif in_ratio > max(aspect):
    h, w = height, int(round(height * max(aspect)))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(frames: np.ndarray, rng: np.random.Generator, size: int, area: Sequence[float],
                        aspect: Sequence[float]) -> np.ndarray:
  """One random-resized-crop box for the clip, resized to `size`: (T, H, W, 3) -> (T, size, size, 3) uint8."""
  _check_clip(frames)
  box = sample_random_resized_crop_box(rng, frames.shape[1], frames.shape[2], area, aspect)
  return resize(crop(frames, box), size, size)


def random_short_side_jitter_crop(frames: np.ndarray, rng: np.random.Generator, size: int,
                                  scales: Sequence[int], inverse_uniform: bool = False) -> np.ndarray:
  """Short side resized to a random scale in `scales`, then a random `size` crop: -> (T, size, size, 3).

  Scale: uniform in [min, max] (or 1/scale uniform when `inverse_uniform`), rounded (PySlowFast
  `random_short_side_scale_jitter`). The crop offset is uniform over every valid position, including the last
  one (PySlowFast's `np.random.randint(0, H - size)` never picks the last).
  """
  _check_clip(frames)
  shape, box = sample_short_side_jitter_box(rng, frames.shape[1], frames.shape[2], size, scales, inverse_uniform)
  return resized_window(frames, shape, box)


def sample_short_side_jitter_box(rng: np.random.Generator, height: int, width: int, size: int,
                                 scales: Sequence[int], inverse_uniform: bool = False) -> tuple[tuple[int, int], Box]:
  """The random draw of `random_short_side_jitter_crop` for (height, width) frames: ((h, w) the frames are resized
  to, the `size` x `size` box cut from them)."""
  lo, hi = scales
  if lo < size:
    raise ValueError(f'train_jitter_scales {tuple(scales)} must not be smaller than crop_size {size}.')
  if inverse_uniform:
    scale = int(round(1.0 / rng.uniform(1.0 / hi, 1.0 / lo)))
  else:
    scale = int(round(rng.uniform(lo, hi)))
  height, width = short_side_shape(height, width, scale)
  top = int(rng.integers(0, height - size + 1))
  left = int(rng.integers(0, width - size + 1))
  return (height, width), (top, left, size, size)


def resized_window(frames: np.ndarray, shape: tuple[int, int], box: Box) -> np.ndarray:
  """`crop(resize(frames, *shape), box)` computed from the source pixels the window needs: (T, h, w, 3) uint8
  (a view of `frames` when `shape` is their size).

  One bilinear warp per frame maps each output pixel centre to the source position `cv2.resize` samples for it
  (x_src = (x + 0.5) * W / width - 0.5), so the frames are resized once, at the window's size: 4x less CPU than
  resizing whole 320-line frames, within one level of the two-step result (OpenCV's warp interpolates at 1/32
  pixel, its resize at 1/2048).
  """
  top, left, height, width = box
  if top < 0 or left < 0 or top + height > shape[0] or left + width > shape[1]:
    raise ValueError(f'Crop box {box} does not fit in frames of size {shape}.')
  if tuple(shape) == frames.shape[1:3]:
    return crop(frames, box)
  scale_y, scale_x = frames.shape[1] / shape[0], frames.shape[2] / shape[1]
  to_source = np.array([[scale_x, 0.0, (left + 0.5) * scale_x - 0.5],
                        [0.0, scale_y, (top + 0.5) * scale_y - 0.5]])
  out = np.empty((frames.shape[0], height, width, 3), np.uint8)
  for t in range(frames.shape[0]):
    cv2.warpAffine(frames[t], to_source, (width, height), dst=out[t],
                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
  return out


def horizontal_flip(frames: np.ndarray) -> np.ndarray:
  """Mirrors every frame left-right: (T, H, W, 3) uint8 -> (T, H, W, 3) uint8 (contiguous)."""
  out = np.empty(frames.shape, np.uint8)
  for t in range(frames.shape[0]):
    cv2.flip(frames[t], 1, dst=out[t])
  return out


# --- RandAugment -----------------------------------------------------------------------------------------------
# timm's `rand_augment_transform('rand-m{M}-n{N}-mstd{S}-inc1')` as PySlowFast vendors it
# (slowfast/datasets/rand_augment.py): N ops drawn with replacement, each applied with probability 0.5 at a
# magnitude drawn from N(M, S) and clipped to [0, 10]. Written here because timm draws its parameters per image
# (we need one draw per clip) and torchvision's RandAugment has a different op set and magnitude scale.
# Geometric ops fill with grey (128) and use bicubic interpolation (PySlowFast AUG.INTERPOLATION).

_MAX_LEVEL = 10.0
_FILL = (128, 128, 128)
_INTERPOLATION = {'bilinear': cv2.INTER_LINEAR, 'bicubic': cv2.INTER_CUBIC}


def _signed(rng: np.random.Generator, value: float) -> float:
  return -value if rng.random() > 0.5 else value


def _apply_lut(frames: np.ndarray, lut: np.ndarray) -> np.ndarray:
  """lut: uint8 (256,) for the whole clip, or (T, 256, 3) per frame and channel."""
  frames = np.ascontiguousarray(frames)
  out = np.empty_like(frames)
  t, h, w, c = frames.shape
  if lut.ndim == 1:
    cv2.LUT(frames.reshape(t * h, w * c), lut, dst=out.reshape(t * h, w * c))
  else:
    for i in range(t):
      cv2.LUT(frames[i], lut[i][None], dst=out[i])
  return out


def _blend(degenerate: np.ndarray, frames: np.ndarray, factor: float) -> np.ndarray:
  """Pillow `Image.blend(degenerate, frames, factor)`: trunc(clip(d + factor * (x - d))), uint8 (T, H, W, 3).

  OpenCV rounds to nearest; the -0.499 offset turns that into Pillow's truncation (except within 0.001 below an
  integer).
  """
  t, h, w, c = frames.shape
  out = cv2.addWeighted(np.ascontiguousarray(frames).reshape(t * h, w * c), factor,
                        degenerate.reshape(t * h, w * c), 1.0 - factor, -0.499)
  return out.reshape(t, h, w, c)


def _blend_lut(degenerate_value, factor: float) -> np.ndarray:
  """Pillow's blend with a constant degenerate image as a LUT (float32 arithmetic, truncation, like Blend.c)."""
  values = np.float32(degenerate_value) + np.float32(factor) * (np.arange(256, dtype=np.float32)
                                                                 - np.float32(degenerate_value))
  return np.clip(values, 0, 255).astype(np.uint8)


def _gray(frames: np.ndarray) -> np.ndarray:
  """Pillow's RGB -> L (ITU-R 601 luma): (T, H, W, 3) uint8 -> (T, H, W) uint8."""
  t, h, w, _ = frames.shape
  return cv2.cvtColor(np.ascontiguousarray(frames).reshape(t * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(t, h, w)


def _histograms(frames: np.ndarray) -> np.ndarray:
  """Per frame and channel pixel counts: (T, H, W, 3) uint8 -> (T, 3, 256) int64."""
  return np.array([[cv2.calcHist([frame], [c], None, [256], [0, 256]).ravel() for c in range(3)]
                   for frame in frames]).astype(np.int64)


def _autocontrast(frames: np.ndarray) -> np.ndarray:
  """Pillow `ImageOps.autocontrast` (cutoff 0) per frame and channel: stretch [min, max] to [0, 255]."""
  present = _histograms(frames) > 0
  lo = present.argmax(-1)[..., None].astype(np.float64)
  hi = 255 - present[..., ::-1].argmax(-1)[..., None].astype(np.float64)
  identity = np.arange(256, dtype=np.float64)
  with np.errstate(divide='ignore', invalid='ignore'):
    scale = 255.0 / (hi - lo)
    stretched = np.clip(np.trunc(identity * scale - lo * scale), 0, 255)
  lut = np.where(hi > lo, stretched, identity).astype(np.uint8)  # (T, 3, 256)
  return _apply_lut(frames, lut.transpose(0, 2, 1))


def _equalize(frames: np.ndarray) -> np.ndarray:
  """Pillow `ImageOps.equalize` per frame and channel (its step and rounding rules)."""
  hist = _histograms(frames)
  last_nonzero = 255 - (hist[..., ::-1] > 0).argmax(-1)
  last_count = np.take_along_axis(hist, last_nonzero[..., None], -1)[..., 0]
  step = (hist.sum(-1) - last_count) // 255
  before = np.cumsum(hist, -1) - hist  # Pixels in the bins below each value.
  equalized = np.minimum(255, (step[..., None] // 2 + before) // np.maximum(step, 1)[..., None])
  keep = ((hist > 0).sum(-1) <= 1) | (step == 0)
  lut = np.where(keep[..., None], np.arange(256), equalized).astype(np.uint8)
  return _apply_lut(frames, lut.transpose(0, 2, 1))


def _sharpness(frames: np.ndarray, factor: float) -> np.ndarray:
  """Pillow `ImageEnhance.Sharpness`: blend with the SMOOTH-filtered frame (whose border pixels stay as is)."""
  t, h, w, c = frames.shape
  kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13
  # Filtering the frames stacked vertically only mixes frames in each frame's first and last rows, which are
  # restored from the original below.
  smooth = cv2.filter2D(np.ascontiguousarray(frames).reshape(t * h, w, c), -1, kernel).reshape(t, h, w, c)
  smooth[:, [0, -1]] = frames[:, [0, -1]]
  smooth[:, :, [0, -1]] = frames[:, :, [0, -1]]
  return _blend(smooth, frames, factor)


def _affine_op(matrix: Callable[[int, int], tuple[float, ...]],
               interpolation: str) -> Callable[[np.ndarray], np.ndarray]:
  """`matrix(h, w)` is Pillow's output->input affine map (a, b, c, d, e, f) in pixel-edge coordinates."""
  def apply(frames):
    h, w = frames.shape[1:3]
    a, b, c, d, e, f = matrix(h, w)
    # Pillow samples at pixel centres (x + 0.5); OpenCV indexes pixel centres at integers.
    m = np.array([[a, b, c + 0.5 * (a + b - 1)], [d, e, f + 0.5 * (d + e - 1)]], np.float64)
    out = np.empty_like(frames)
    for t in range(frames.shape[0]):
      cv2.warpAffine(frames[t], m, (w, h), dst=out[t], flags=_INTERPOLATION[interpolation] | cv2.WARP_INVERSE_MAP,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=_FILL)
    return out
  return apply


def _rotation(degrees: float) -> Callable[[int, int], tuple[float, ...]]:
  """Pillow `Image.rotate(degrees)` (counter-clockwise about the centre) as an output->input affine map."""
  def matrix(h, w):
    angle = -math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = w / 2.0, h / 2.0
    return (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)
  return matrix


def _solarize_add_lut(add: int) -> np.ndarray:
  x = np.arange(256)
  return np.where(x < 128, np.minimum(255, x + add), x).astype(np.uint8)


RAND_AUGMENT_OPS = (
    'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing', 'SolarizeIncreasing', 'SolarizeAdd',
    'ColorIncreasing', 'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing', 'ShearX', 'ShearY',
    'TranslateXRel', 'TranslateYRel')


def rand_augment_level_args(name: str, level: float, rng: np.random.Generator) -> tuple[float, ...]:
  """timm's `LEVEL_TO_ARG` for the 'inc1' op set: magnitude level in [0, 10] -> the op's argument(s)."""
  if name in ('AutoContrast', 'Equalize', 'Invert'):
    return ()
  if name == 'Rotate':
    return (_signed(rng, level / _MAX_LEVEL * 30.0),)
  if name == 'PosterizeIncreasing':
    return (4 - int(level / _MAX_LEVEL * 4),)
  if name == 'SolarizeIncreasing':
    return (256 - int(level / _MAX_LEVEL * 256),)
  if name == 'SolarizeAdd':
    return (int(level / _MAX_LEVEL * 110),)
  if name.endswith('Increasing'):  # Colour, Contrast, Brightness, Sharpness: factor 1 +- 0.9 * level / 10.
    return (1.0 + _signed(rng, level / _MAX_LEVEL * 0.9),)
  if name in ('ShearX', 'ShearY'):
    return (_signed(rng, level / _MAX_LEVEL * 0.3),)
  if name in ('TranslateXRel', 'TranslateYRel'):
    return (_signed(rng, level / _MAX_LEVEL * 0.45),)
  raise ValueError(f'Unknown RandAugment op {name!r}; known: {RAND_AUGMENT_OPS}.')


def rand_augment_op(name: str, args: Sequence[float], interpolation: str = 'bicubic'
                    ) -> Callable[[np.ndarray], np.ndarray]:
  """The clip function (T, H, W, 3) uint8 -> same, applying op `name` with `args` identically to every frame."""
  identity = np.arange(256)
  if name == 'AutoContrast':
    return _autocontrast
  if name == 'Equalize':
    return _equalize
  if name == 'Invert':
    return lambda frames: _apply_lut(frames, (255 - identity).astype(np.uint8))
  if name == 'PosterizeIncreasing':  # Keep the top `bits` bits; 0 bits gives black (Pillow 13 refuses 0).
    mask = 0xFF & (0xFF << (8 - int(args[0])))
    return lambda frames: _apply_lut(frames, (identity & mask).astype(np.uint8))
  if name == 'SolarizeIncreasing':
    return lambda frames: _apply_lut(frames, np.where(identity < args[0], identity, 255 - identity).astype(np.uint8))
  if name == 'SolarizeAdd':
    return lambda frames: _apply_lut(frames, _solarize_add_lut(int(args[0])))
  if name == 'BrightnessIncreasing':  # Blend with black.
    return lambda frames: _apply_lut(frames, _blend_lut(0, args[0]))
  if name == 'ContrastIncreasing':  # Blend with the frame's mean grey level, rounded.
    def contrast(frames):
      means = _gray(frames).reshape(frames.shape[0], -1).mean(-1)
      luts = np.stack([_blend_lut(int(mean + 0.5), args[0]) for mean in means])
      return _apply_lut(frames, np.repeat(luts[:, :, None], 3, -1))
    return contrast
  if name == 'ColorIncreasing':  # Blend with the frame's grey version.
    def color(frames):
      t, h, w, _ = frames.shape
      grey = cv2.cvtColor(_gray(frames).reshape(t * h, w), cv2.COLOR_GRAY2RGB).reshape(t, h, w, 3)
      return _blend(grey, frames, args[0])
    return color
  if name == 'SharpnessIncreasing':
    return lambda frames: _sharpness(frames, args[0])
  if name == 'Rotate':
    return _affine_op(_rotation(args[0]), interpolation)
  if name == 'ShearX':
    return _affine_op(lambda h, w: (1, args[0], 0, 0, 1, 0), interpolation)
  if name == 'ShearY':
    return _affine_op(lambda h, w: (1, 0, 0, args[0], 1, 0), interpolation)
  if name == 'TranslateXRel':
    return _affine_op(lambda h, w: (1, 0, args[0] * w, 0, 1, 0), interpolation)
  if name == 'TranslateYRel':
    return _affine_op(lambda h, w: (1, 0, 0, 0, 1, args[0] * h), interpolation)
  raise ValueError(f'Unknown RandAugment op {name!r}; known: {RAND_AUGMENT_OPS}.')


def sample_rand_augment(rng: np.random.Generator, num_layers: int, magnitude: float,
                        magnitude_std: float) -> list[tuple[str, tuple[float, ...]]]:
  """One clip's RandAugment draw: the (op name, args) pairs to apply, in order (skipped ops left out)."""
  ops = []
  for index in rng.integers(0, len(RAND_AUGMENT_OPS), size=num_layers):
    if rng.random() > 0.5:  # Each chosen op runs with probability 0.5.
      continue
    level = rng.normal(magnitude, magnitude_std) if magnitude_std > 0 else magnitude
    level = min(_MAX_LEVEL, max(0.0, level))
    name = RAND_AUGMENT_OPS[index]
    ops.append((name, rand_augment_level_args(name, level, rng)))
  return ops


def rand_augment(frames: np.ndarray, rng: np.random.Generator, num_layers: int = 4, magnitude: float = 7,
                 magnitude_std: float = 0.5, interpolation: str = 'bicubic') -> np.ndarray:
  """RandAugment 'rand-m{magnitude}-n{num_layers}-mstd{magnitude_std}-inc1', the same draw for every frame.

  (T, H, W, 3) uint8 -> (T, H, W, 3) uint8. Geometric ops fill uncovered pixels with (128, 128, 128).
  """
  _check_clip(frames)
  if interpolation not in _INTERPOLATION:
    raise ValueError(f'randaugment interpolation must be one of {tuple(_INTERPOLATION)}, got {interpolation!r}.')
  for name, args in sample_rand_augment(rng, num_layers, magnitude, magnitude_std):
    frames = rand_augment_op(name, args, interpolation)(frames)
  return frames


# --- Full train / eval transforms ------------------------------------------------------------------------------


def train_transform(frames: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
  """Training augmentation of one decoded clip: (T, H, W, 3) uint8 -> (T, crop, crop, 3) uint8.

  Reads cfg keys: randaugment, randaugment_num_layers, randaugment_magnitude, randaugment_mstd,
  randaugment_interpolation, random_resized_crop, rrc_area, rrc_aspect, train_jitter_scales,
  inverse_uniform_sampling, crop_size, random_flip (see `mvit_jax.data.config`). Normalisation and random erasing
  are `mvit_jax.data.device_preprocess.preprocess_on_device`'s.
  """
  _check_clip(frames)
  if cfg.randaugment:
    frames = rand_augment(frames, rng, cfg.randaugment_num_layers, cfg.randaugment_magnitude,
                          cfg.randaugment_mstd, cfg.randaugment_interpolation)
  if cfg.random_resized_crop:
    frames = random_resized_crop(frames, rng, cfg.crop_size, cfg.rrc_area, cfg.rrc_aspect)
  else:
    frames = random_short_side_jitter_crop(frames, rng, cfg.crop_size, cfg.train_jitter_scales,
                                           cfg.inverse_uniform_sampling)
  if cfg.random_flip and rng.random() < 0.5:
    frames = horizontal_flip(frames)
  return frames


def eval_short_side(cfg) -> int:
  """The short side test views are cut from: cfg.test_short_side for one centre crop, cfg.crop_size for three
  crops along the long side (PySlowFast's TEST_CROP_SIZE). Sources decode at this size, so a view is resized once."""
  if cfg.test_num_crops == 1:
    return cfg.test_short_side
  if cfg.test_num_crops == 3:
    return cfg.crop_size
  raise ValueError(f'test_num_crops must be 1 or 3, got {cfg.test_num_crops}.')


def eval_transform(frames: np.ndarray, spatial_idx: int, num_crops: int, cfg) -> np.ndarray:
  """Test view of one clip: (T, H, W, 3) uint8 -> (T, crop, crop, 3) uint8, C-contiguous.

  One crop: short side resized to cfg.test_short_side, centre crop (`spatial_idx` ignored). Three crops: short
  side resized to cfg.crop_size, crop `spatial_idx` (0/1/2 = left/centre/right along the long side), as
  PySlowFast's test mode does. Frames decoded at `eval_short_side(cfg)` are not resized again. Normalisation is
  `device_preprocess.preprocess_on_device`'s.
  """
  _check_clip(frames)
  if num_crops == 1:
    short_side, spatial_idx = cfg.test_short_side, 1
  elif num_crops == 3:
    short_side = cfg.crop_size
  else:
    raise ValueError(f'test_num_crops must be 1 or 3, got {num_crops}.')
  frames = resize_short_side(frames, short_side)
  box = uniform_crop_box(frames.shape[1], frames.shape[2], cfg.crop_size, spatial_idx)
  return np.ascontiguousarray(crop(frames, box))
