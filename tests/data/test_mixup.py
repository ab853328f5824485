"""Mixup / CutMix: targets equal the hand-computed lambda mixture, the CutMix box is a tube, jit and sharding work."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mvit_jax.data.mixup import cutmix_box, label_smoothing_targets, mixup_cutmix

NUM_CLASSES = 5
# One compiled function per option set (eager dispatch of every op is slower than compiling).
mix = jax.jit(mixup_cutmix, static_argnames=(
    'num_classes', 'mixup_alpha', 'cutmix_alpha', 'switch_prob', 'prob', 'label_smoothing'))


def constant_videos(batch=4, frames=2, size=16):
  """float32 (B, T, H, W, 3) where every value of sample i equals i + 1."""
  return jnp.broadcast_to(jnp.arange(1, batch + 1, dtype=jnp.float32)[:, None, None, None, None],
                          (batch, frames, size, size, 3))


def smoothed(labels, smoothing=0.1):
  """Hand-computed smoothed one-hots: 1 - s + s / C on the label, s / C elsewhere."""
  out = np.full((len(labels), NUM_CLASSES), smoothing / NUM_CLASSES)
  out[np.arange(len(labels)), labels] = 1 - smoothing + smoothing / NUM_CLASSES
  return out


def test_label_smoothing_targets_hand_computed():
  targets = label_smoothing_targets(jnp.array([0, 3]), NUM_CLASSES, 0.1)
  np.testing.assert_allclose(targets, [[0.92, 0.02, 0.02, 0.02, 0.02], [0.02, 0.02, 0.02, 0.92, 0.02]], atol=1e-6)
  multi_hot = label_smoothing_targets(jnp.array([[1.0, 0, 1, 0, 0]]), NUM_CLASSES, 0.1)
  np.testing.assert_allclose(multi_hot, [[0.92, 0.02, 0.92, 0.02, 0.02]], atol=1e-6)
  with pytest.raises(ValueError, match='labels'):
    label_smoothing_targets(jnp.zeros((2, 3)), NUM_CLASSES, 0.1)


def test_mixup_is_the_lambda_mixture_with_the_reversed_batch():
  videos, labels = constant_videos(), np.array([0, 1, 2, 4])
  lams = []
  for seed in range(5):
    mixed, targets = mix(jax.random.key(seed), videos, jnp.array(labels), num_classes=NUM_CLASSES,
                                  cutmix_alpha=0.0)
    lam = float(mixed[0, 0, 0, 0, 0] - 4) / (1 - 4)  # Sample 0 (value 1) mixed with sample 3 (value 4).
    expected_videos = lam * np.arange(1, 5) + (1 - lam) * np.arange(4, 0, -1)
    np.testing.assert_allclose(mixed, np.broadcast_to(expected_videos[:, None, None, None, None], videos.shape),
                               rtol=1e-5)
    expected_targets = lam * smoothed(labels) + (1 - lam) * smoothed(labels[::-1])
    np.testing.assert_allclose(targets, expected_targets, atol=1e-5)
    np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-5)
    lams.append(lam)
  assert len(set(np.round(lams, 4))) == 5 and all(0 <= lam <= 1 for lam in lams)


def test_cutmix_box_is_a_tube_and_lambda_is_its_area():
  batch, size = 4, 16
  videos, labels = constant_videos(batch, frames=3, size=size), np.array([0, 1, 2, 3])
  nonempty = 0
  for seed in range(10):
    mixed, targets = mix(jax.random.key(seed), videos, jnp.array(labels), num_classes=NUM_CLASSES,
                                  mixup_alpha=0.0)
    mixed = np.asarray(mixed)
    pasted = mixed != np.asarray(videos)  # Pixels taken from the reversed batch.
    np.testing.assert_array_equal(pasted, np.broadcast_to(pasted[:1, :1, :, :, :1], pasted.shape))
    np.testing.assert_array_equal(mixed[pasted], np.asarray(videos[::-1])[pasted])
    box = pasted[0, 0, :, :, 0]
    area = box.sum()
    if area:
      rows, cols = np.nonzero(box)
      assert area == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # A filled rectangle.
      nonempty += 1
    lam = 1 - area / size**2
    np.testing.assert_allclose(targets, lam * smoothed(labels) + (1 - lam) * smoothed(labels[::-1]), atol=1e-6)
  assert nonempty >= 5


def test_cutmix_box_formula():
  height, width = 20, 30
  for seed in range(50):
    lam = jax.random.uniform(jax.random.key(1000 + seed))
    (top, bottom, left, right), corrected = cutmix_box(jax.random.key(seed), lam, height, width)
    cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
    assert 0 <= top <= bottom <= height and 0 <= left <= right <= width
    if 0 < top and bottom < height:  # Not clipped: PySlowFast's box spans 2 * (cut // 2) pixels.
      assert bottom - top == 2 * (cut_h // 2)
    if 0 < left and right < width:
      assert right - left == 2 * (cut_w // 2)
    np.testing.assert_allclose(corrected, 1 - (bottom - top) * (right - left) / (height * width), atol=1e-6)


def test_switch_prob_and_prob_select_the_mode():
  videos, labels = constant_videos(), jnp.array([0, 1, 2, 3])
  for seed in range(5):
    key = jax.random.key(seed)
    cut, _ = mix(key, videos, labels, num_classes=NUM_CLASSES, switch_prob=1.0)
    assert set(np.unique(cut[0])) <= {1.0, 4.0}  # CutMix only copies pixels.
    blend, _ = mix(key, videos, labels, num_classes=NUM_CLASSES, switch_prob=0.0)
    assert np.unique(blend[0]).size == 1  # Mixup blends the whole clip by one lambda.
    off, targets = mix(key, videos, labels, num_classes=NUM_CLASSES, prob=0.0)
    np.testing.assert_array_equal(off, videos)
    np.testing.assert_allclose(targets, smoothed(np.array([0, 1, 2, 3])), atol=1e-6)


def test_switch_frequency_and_determinism():
  videos, labels = constant_videos(size=8), jnp.array([0, 1, 2, 3])
  fn = jax.jit(jax.vmap(lambda key: mix(key, videos, labels, num_classes=NUM_CLASSES)[0]))
  mixed = np.asarray(fn(jax.random.split(jax.random.key(0), 200)))
  is_cutmix = np.all(np.isin(mixed, [1.0, 2.0, 3.0, 4.0]), axis=(1, 2, 3, 4, 5))
  assert 70 < is_cutmix.sum() < 130
  again = np.asarray(fn(jax.random.split(jax.random.key(0), 200)))
  np.testing.assert_array_equal(mixed, again)


def test_jit_on_a_batch_sharded_over_devices():
  devices = np.array(jax.devices())
  mesh = Mesh(devices, ('data',))
  batch = len(devices)
  videos = jax.random.normal(jax.random.key(1), (batch, 2, 8, 8, 3))
  labels = jnp.arange(batch) % NUM_CLASSES
  fn = functools.partial(mix, num_classes=NUM_CLASSES)
  for seed in range(4):
    expected_videos, expected_targets = fn(jax.random.key(seed), videos, labels)
    sharded = jax.device_put(videos, NamedSharding(mesh, P('data')))
    sharded_labels = jax.device_put(labels, NamedSharding(mesh, P('data')))
    got_videos, got_targets = fn(jax.random.key(seed), sharded, sharded_labels)
    np.testing.assert_allclose(got_videos, expected_videos, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_targets, expected_targets, rtol=1e-6, atol=1e-6)


def test_bad_inputs():
  with pytest.raises(ValueError, match='at least 2'):
    mixup_cutmix(jax.random.key(0), constant_videos(batch=1), jnp.array([0]), num_classes=NUM_CLASSES)
  with pytest.raises(ValueError, match='float'):
    mixup_cutmix(jax.random.key(0), jnp.zeros((2, 1, 4, 4, 3), jnp.uint8), jnp.array([0, 1]), num_classes=5)
  with pytest.raises(ValueError, match='both 0'):
    mixup_cutmix(jax.random.key(0), constant_videos(), jnp.arange(4), num_classes=5, mixup_alpha=0, cutmix_alpha=0)
