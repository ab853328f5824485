"""Mixup / CutMix with label smoothing as an on-device batch transform.

Follows PySlowFast's `slowfast/datasets/mixup.py` (itself timm's batch mode): one lambda for the whole batch,
sample i is mixed with sample B-1-i (the batch flipped), with probability `switch_prob` the batch uses CutMix
(one box, the same for every frame, lambda corrected to the box's true area) instead of Mixup, and the targets are
label-smoothed one-hots mixed with the same lambda. Jit-compatible (no Python branching on traced values) and
works on a batch sharded over devices (the flip is a permutation XLA lowers to collectives).
"""
import jax
import jax.numpy as jnp


def label_smoothing_targets(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
  """Soft targets y * (1 - smoothing) + smoothing / num_classes.

  labels: int (B,) class indices or float (B, num_classes) multi-hot. Returns float32 (B, num_classes); for
  class indices the true class gets 1 - smoothing + smoothing / num_classes (PySlowFast `mixup_target`).
  """
  labels = jnp.asarray(labels)
  if labels.ndim == 1 and jnp.issubdtype(labels.dtype, jnp.integer):
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  elif labels.ndim == 2 and labels.shape[1] == num_classes:
    one_hot = labels.astype(jnp.float32)
  else:
    raise ValueError(f'labels must be int (B,) or multi-hot (B, {num_classes}); got {labels.dtype} {labels.shape}.')
  return one_hot * (1.0 - smoothing) + smoothing / num_classes


def cutmix_box(rng: jax.Array, lam: jax.Array, height: int, width: int):
  """PySlowFast `get_cutmix_bbox` (margin 0, lambda corrected).

  A box of side int(H * sqrt(1 - lam)) x int(W * sqrt(1 - lam)) centred at a uniform random pixel, clipped to
  the frame. Returns ((top, bottom, left, right), corrected_lam) with bottom/right exclusive and
  corrected_lam = 1 - box_area / (H * W).
  """
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = (height * ratio).astype(jnp.int32)
  cut_w = (width * ratio).astype(jnp.int32)
  rng_y, rng_x = jax.random.split(rng)
  cy = jax.random.randint(rng_y, (), 0, height)
  cx = jax.random.randint(rng_x, (), 0, width)
  top = jnp.clip(cy - cut_h // 2, 0, height)
  bottom = jnp.clip(cy + cut_h // 2, 0, height)
  left = jnp.clip(cx - cut_w // 2, 0, width)
  right = jnp.clip(cx + cut_w // 2, 0, width)
  corrected_lam = 1.0 - ((bottom - top) * (right - left)).astype(jnp.float32) / (height * width)
  return (top, bottom, left, right), corrected_lam


def mixup_cutmix(rng: jax.Array, videos: jax.Array, labels: jax.Array, *, num_classes: int,
                 mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, switch_prob: float = 0.5,
                 prob: float = 1.0, label_smoothing: float = 0.1) -> tuple[jax.Array, jax.Array]:
  """Mixes a batch with itself flipped along the batch axis.

  Args:
    rng: a JAX PRNG key; the same key gives the same result.
    videos: float (B, T, H, W, C) (any (B, ..., H, W, C) works); B must be at least 2.
    labels: int (B,) or multi-hot float (B, num_classes).
    num_classes, mixup_alpha, cutmix_alpha, switch_prob, prob, label_smoothing: PySlowFast MIXUP.* keys. An
      alpha of 0 turns that mode off; with probability 1 - prob the batch is left unmixed (lambda = 1).

  Returns:
    (mixed videos, same shape and dtype; soft targets float32 (B, num_classes), rows summing to the rows of the
    smoothed labels' mixture, i.e. to 1 for class indices).
  """
  if videos.shape[0] < 2:
    raise ValueError(f'Mixup/CutMix needs a batch of at least 2 clips, got videos of shape {videos.shape}.')
  if not jnp.issubdtype(videos.dtype, jnp.floating):
    raise ValueError(f'Mixup/CutMix takes float videos (normalised), got {videos.dtype}.')
  if mixup_alpha <= 0 and cutmix_alpha <= 0:
    raise ValueError('mixup_alpha and cutmix_alpha are both 0: use label_smoothing_targets instead.')
  rng_apply, rng_switch, rng_mix, rng_cut, rng_box = jax.random.split(rng, 5)
  apply = jax.random.uniform(rng_apply) < prob
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(rng_switch) < switch_prob
  else:
    use_cutmix = jnp.asarray(cutmix_alpha > 0)
  use_cutmix = apply & use_cutmix
  lam_mix = jax.random.beta(rng_mix, mixup_alpha, mixup_alpha) if mixup_alpha > 0 else jnp.float32(1.0)
  lam_cut = jax.random.beta(rng_cut, cutmix_alpha, cutmix_alpha) if cutmix_alpha > 0 else jnp.float32(1.0)
  height, width = videos.shape[-3], videos.shape[-2]
  (top, bottom, left, right), lam_cut = cutmix_box(rng_box, lam_cut, height, width)
  lam = jnp.where(apply, jnp.where(use_cutmix, lam_cut, lam_mix), 1.0)

  # Weight of each clip's own pixels: 0 inside the CutMix box and 1 outside it, or lambda everywhere for Mixup.
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  own_weight = jnp.where(use_cutmix, jnp.where(inside, 0.0, 1.0), lam).astype(videos.dtype)[:, :, None]
  mixed = videos * own_weight + videos[::-1] * (1 - own_weight)

  targets = label_smoothing_targets(labels, num_classes, label_smoothing)
  targets = lam * targets + (1.0 - lam) * targets[::-1]
  return mixed, targets
