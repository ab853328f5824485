"""Normalisation and random erasing of uint8 clip batches on the accelerator, inside the jitted step.

The loaders ship uint8 clips (after RandAugment, crop and flip: 4x fewer bytes through grain's shared memory and
to the device than float32); this module finishes PySlowFast's train / test transforms in JAX:
- normalisation: (pixel / 255 - mean) / std per channel, computed as pixel * (1 / (255 std)) - mean / std with
  float32 constants rounded from float64;
- random erasing (train only): PySlowFast/timm `RandomErasing` in mode 'pixel', count 1, cube: with probability p
  one box per clip, area fraction uniform in [0.02, 1/3], aspect h/w log-uniform in [0.3, 1/0.3], h and w rounded,
  up to 100 tries (the first one that fits is used; none fits -> no erasing), the same box on every frame, filled
  with fresh N(0, 1) noise per frame, pixel and channel.
No library offers clip-level (same box on every frame) erasing in JAX, hence written here. The 100 tries are
drawn at once and the first fitting one is picked with argmax: no Python branching on traced values, so it jits
and runs on a batch sharded over devices along B. The noise is the expensive part (random bits for up to a third
of every frame); on a CPU backend it is slow (see `scripts/bench_data.py`), on an accelerator a small fused op.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

ERASING_AREA = (0.02, 1 / 3)    # Fraction of the frame (timm sl, sh).
ERASING_MIN_ASPECT = 0.3        # timm r1; aspect in [r1, 1/r1].
ERASING_ATTEMPTS = 100          # PySlowFast's cube mode.


def _normalize_constants(mean, std) -> tuple[np.ndarray, np.ndarray]:
  """float32 (3,) scale 1 / (255 std) and offset mean / std, each rounded once from float64."""
  if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
    raise ValueError(f'data config mean and std need 3 values each and std > 0; got mean={mean}, std={std}.')
  std = np.asarray(std, np.float64)
  return ((1.0 / (255.0 * std)).astype(np.float32), (np.asarray(mean, np.float64) / std).astype(np.float32))


def normalize(videos: jax.Array, mean, std) -> jax.Array:
  """uint8 (..., 3) -> float32 (..., 3): (pixel / 255 - mean) / std per channel (mean, std on the [0, 1] scale)."""
  scale, offset = _normalize_constants(mean, std)
  return videos.astype(jnp.float32) * scale - offset


def sample_erasing_boxes(rng: jax.Array, batch: int, height: int, width: int):
  """One erasing box per clip, as timm's `RandomErasing` draws it (PySlowFast cube mode).

  Returns int32 (B,) arrays (top, left, h, w, found); found is False where none of the ERASING_ATTEMPTS tries
  fit (then the clip is not erased).
  """
  rng_area, rng_aspect, rng_top, rng_left = jax.random.split(rng, 4)
  shape = (batch, ERASING_ATTEMPTS)
  area = jax.random.uniform(rng_area, shape, minval=ERASING_AREA[0], maxval=ERASING_AREA[1]) * (height * width)
  log_aspect = math.log(ERASING_MIN_ASPECT)
  aspect = jnp.exp(jax.random.uniform(rng_aspect, shape, minval=log_aspect, maxval=-log_aspect))
  # jnp.round rounds halves to even, as Python's round() in timm.
  h = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
  w = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
  fits = (h < height) & (w < width)
  first = jnp.argmax(fits, axis=1)  # First fitting try (0 when none fits; `found` masks that case).
  found = jnp.any(fits, axis=1)
  h = jnp.take_along_axis(h, first[:, None], axis=1)[:, 0]
  w = jnp.take_along_axis(w, first[:, None], axis=1)[:, 0]
  top = jax.random.randint(rng_top, (batch,), 0, height - h + 1)
  left = jax.random.randint(rng_left, (batch,), 0, width - w + 1)
  return top, left, h, w, found


def max_erasing_area(height: int, width: int) -> int:
  """Most pixels a box from sample_erasing_boxes can cover: h * w <= (sqrt(A r) + 1/2) (sqrt(A / r) + 1/2) with
  A <= HW / 3, sqrt(A r) < H and sqrt(A / r) < W, so h * w < HW / 3 + (H + W) / 2 + 1 / 4."""
  return min(height * width, height * width // 3 + (height + width) // 2 + 1)


def random_erasing(videos: jax.Array, rng: jax.Array, prob: float) -> jax.Array:
  """With probability `prob` per clip, fills one box (the same on every frame) with N(0, 1) noise.

  videos: float32 (B, T, H, W, C), normalised. Returns the same shape and dtype. Noise is drawn for at most
  max_erasing_area(H, W) pixels per frame (about a third of the frame) and laid out row by row into the box, which
  keeps the random-number work (the bulk of this function's cost) well below drawing it for every pixel.
  """
  b, t, height, width, c = videos.shape
  rng_apply, rng_box, rng_noise = jax.random.split(rng, 3)
  top, left, h, w, found = sample_erasing_boxes(rng_box, b, height, width)
  apply = found & (jax.random.uniform(rng_apply, (b,)) < prob)
  row = jnp.arange(height)[None, :, None] - top[:, None, None]   # (B, H, 1): row inside the box.
  col = jnp.arange(width)[None, None, :] - left[:, None, None]   # (B, 1, W)
  in_box = (row >= 0) & (row < h[:, None, None]) & (col >= 0) & (col < w[:, None, None]) & apply[:, None, None]
  area = max_erasing_area(height, width)
  pixel = jnp.clip(row * w[:, None, None] + col, 0, area - 1).reshape(b, 1, height * width, 1)  # Index in the box.
  noise = jax.random.normal(rng_noise, (b, t, area, c), videos.dtype)
  noise = jnp.take_along_axis(noise, pixel, axis=2, mode='clip').reshape(videos.shape)
  return jnp.where(in_box[:, None, :, :, None], noise, videos)


def preprocess_on_device(videos: jax.Array, rng: jax.Array | None, cfg, *, train: bool) -> jax.Array:
  """uint8 (B, T, H, W, 3) clips, as the loaders yield them -> float32 (B, T, H, W, 3): normalised with
  cfg.mean / cfg.std, and in training randomly erased with probability cfg.random_erasing_prob (one box per clip,
  the same on every frame).

  `rng` is only used when train and cfg.random_erasing_prob > 0. Jit-compatible; `cfg` and `train` are static.
  """
  if videos.ndim != 5 or videos.shape[-1] != 3:
    raise ValueError(f'preprocess_on_device takes videos (B, T, H, W, 3); got shape {videos.shape}.')
  if videos.dtype != jnp.uint8:
    raise ValueError(f'preprocess_on_device takes uint8 videos (the loaders\' output); got {videos.dtype}.')
  out = normalize(videos, cfg.mean, cfg.std)
  if train and cfg.random_erasing_prob > 0:
    out = random_erasing(out, rng, cfg.random_erasing_prob)
  return out
