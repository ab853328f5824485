"""On-device normalisation and random erasing: exact values, timm's box distribution, one tube per clip, jit +
sharded."""
import math

import jax
import numpy as np
import pytest

from mvit_jax.data import device_preprocess
from mvit_jax.data.config import default_data_config

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_cfg(**overrides):
  cfg = default_data_config()
  cfg.update(dict(mean=MEAN, std=STD))
  cfg.update(overrides)
  return cfg


def random_videos(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def timm_erasing_box(rng: np.random.Generator, height: int, width: int):
  """Reference: timm/PySlowFast `RandomErasing` box (top, left, h, w), or None when 100 tries do not fit."""
  for _ in range(100):
    target_area = rng.uniform(0.02, 1 / 3) * height * width
    ratio = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
    h = int(round(math.sqrt(target_area * ratio)))
    w = int(round(math.sqrt(target_area / ratio)))
    if w < width and h < height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  return None


_JITTED = {}


def preprocess(videos, key, *, cfg, train):
  """preprocess_on_device under jit, with cfg and train closed over as a train step would (one compile each)."""
  fn_key = (cfg.to_json(), train)
  if fn_key not in _JITTED:
    _JITTED[fn_key] = jax.jit(lambda v, k: device_preprocess.preprocess_on_device(v, k, cfg, train=train))
  return _JITTED[fn_key](videos, key)


def erased_mask(videos, cfg, key):
  """bool (B, T, H, W, C): where the train output differs from plain normalisation, and that output."""
  out = np.asarray(preprocess(videos, key, cfg=cfg, train=True))
  plain = np.asarray(preprocess(videos, key, cfg=cfg, train=False))
  return out != plain, out


def test_normalize_matches_hand_computed_values():
  cfg = make_cfg()
  videos = random_videos((2, 3, 8, 10, 3))
  videos[0, 0, 0, 0], videos[0, 0, 0, 1] = 0, 255
  out = np.asarray(preprocess(videos, jax.random.key(0), cfg=cfg, train=False))
  assert out.dtype == np.float32 and out.shape == videos.shape
  # float32 constants and arithmetic against float64: within a few float32 ulps of values up to ~2.6.
  np.testing.assert_allclose(out, (videos / 255.0 - np.array(MEAN)) / np.array(STD), rtol=0, atol=1e-6)
  np.testing.assert_allclose(out[0, 0, 0, 0], -np.array(MEAN) / np.array(STD), atol=1e-6)
  np.testing.assert_allclose(out[0, 0, 0, 1], (1 - np.array(MEAN)) / np.array(STD), atol=1e-6)
  # Evaluation never erases, whatever the probability.
  np.testing.assert_array_equal(out, preprocess(videos, jax.random.key(1), cfg=make_cfg(random_erasing_prob=1.0),
                                                train=False))


def test_only_uint8_clips_are_accepted():
  cfg = make_cfg(random_erasing_prob=1.0)
  for dtype in (np.float32, np.int32):  # float32: already normalised somewhere else, which no loader does.
    with pytest.raises(ValueError, match='uint8 videos'):
      device_preprocess.preprocess_on_device(np.zeros((1, 1, 2, 2, 3), dtype), None, cfg, train=False)
  with pytest.raises(ValueError, match=r'\(B, T, H, W, 3\)'):
    device_preprocess.preprocess_on_device(np.zeros((1, 2, 2, 3), np.uint8), None, cfg, train=False)
  with pytest.raises(ValueError, match='std'):
    device_preprocess.preprocess_on_device(np.zeros((1, 1, 2, 2, 3), np.uint8), None, make_cfg(std=(0.2, 0.2)),
                                           train=False)


def test_erasing_is_one_rectangle_on_every_frame_within_the_area_bounds():
  height, width = 24, 32
  videos = random_videos((64, 3, height, width, 3))
  erased, out = erased_mask(videos, make_cfg(random_erasing_prob=1.0), jax.random.key(3))
  noise = []
  for clip in range(len(videos)):
    tube = erased[clip]
    assert tube.any()  # p = 1 and a box always fits in 100 tries here.
    np.testing.assert_array_equal(tube, np.broadcast_to(tube[:1, ..., :1], tube.shape))  # Same box, all frames.
    rows, cols = np.nonzero(tube[0, :, :, 0])
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert tube[0, :, :, 0].sum() == h * w  # A filled rectangle.
    # Area uniform in [0.02, 1/3] of the frame before rounding h and w; aspect h/w in [0.3, 1/0.3].
    assert 0.02 * height * width - (h + w) <= h * w <= height * width / 3 + (h + w)
    assert 0.3 * (1 - 1 / w) - 1 / w <= h / w <= (1 / 0.3) * (1 + 1 / w) + 1 / w
    values = out[clip][tube].reshape(3, -1)
    assert not np.array_equal(values[0], values[1])  # Fresh noise on every frame.
    # And on every pixel and channel (float32 normals from 23 random bits collide now and then, a layout bug
    # that reused noise would repeat whole rows).
    assert len(np.unique(values)) >= 0.99 * values.size
    noise.append(values.ravel())
  noise = np.concatenate(noise)
  assert noise.size > 10000
  assert abs(noise.mean()) < 0.03 and abs(noise.std() - 1) < 0.03  # N(0, 1).


def test_erasing_boxes_follow_timms_distribution():
  height, width, n = 40, 50, 2000
  top, left, h, w, found = map(np.asarray, device_preprocess.sample_erasing_boxes(jax.random.key(0), n, height,
                                                                                   width))
  assert found.all()
  assert np.all((top >= 0) & (top + h <= height) & (left >= 0) & (left + w <= width))
  timm = np.array([timm_erasing_box(np.random.default_rng(s), height, width) for s in range(n)])
  device_area, timm_area = h * w / (height * width), timm[:, 2] * timm[:, 3] / (height * width)
  # Area fraction ~ U(0.02, 1/3) (mean 0.177, sd 0.09 -> the mean of 2000 has sd 0.002).
  assert abs(device_area.mean() - timm_area.mean()) < 0.012 and abs(device_area.mean() - 0.177) < 0.012
  # log(h / w) ~ U(log 0.3, -log 0.3) before rounding, mean 0 (sd of the mean ~0.016), mostly reaching the ends.
  log_aspect = np.log(h / w)
  assert abs(log_aspect.mean()) < 0.06 and abs(np.log(timm[:, 2] / timm[:, 3]).mean()) < 0.06
  assert log_aspect.min() < 0.9 * math.log(0.3) and log_aspect.max() > -0.9 * math.log(0.3)
  # Offsets uniform over the positions that fit: the mean centre is the frame centre.
  assert abs((top + h / 2).mean() - height / 2) < 1 and abs((left + w / 2).mean() - width / 2) < 1.2


def test_max_erasing_area_bounds_every_box():
  for height, width in ((24, 32), (5, 200), (224, 224), (1, 100)):
    _, _, h, w, found = map(np.asarray, device_preprocess.sample_erasing_boxes(jax.random.key(1), 4000, height,
                                                                               width))
    if found.any():
      assert (h * w)[found].max() <= device_preprocess.max_erasing_area(height, width)
  assert device_preprocess.max_erasing_area(224, 224) == 224 * 224 // 3 + 224 + 1


def test_no_box_fits_means_no_erasing():
  # A 1 x 100 frame: area >= 2 pixels and aspect >= 0.3 give h = round(sqrt(area * aspect)) >= 1 = height on
  # every try, so no box fits, as in timm.
  *_, found = device_preprocess.sample_erasing_boxes(jax.random.key(0), 8, 1, 100)
  assert not np.asarray(found).any()
  assert all(timm_erasing_box(np.random.default_rng(s), 1, 100) is None for s in range(8))
  erased, _ = erased_mask(random_videos((8, 2, 1, 100, 3)), make_cfg(random_erasing_prob=1.0), jax.random.key(0))
  assert not erased.any()


def test_erasing_probability_and_p0_identity():
  videos = random_videos((400, 1, 16, 16, 3))
  erased, _ = erased_mask(videos, make_cfg(random_erasing_prob=0.25), jax.random.key(5))
  count = erased.reshape(400, -1).any(axis=1).sum()
  assert 70 <= count <= 130  # Binomial(400, 0.25): mean 100, sd 8.7.
  small = videos[:8]
  np.testing.assert_array_equal(preprocess(small, jax.random.key(0), cfg=make_cfg(random_erasing_prob=0.0),
                                           train=True),
                                preprocess(small, jax.random.key(0), cfg=make_cfg(), train=False))


def test_deterministic_per_rng():
  cfg = make_cfg(random_erasing_prob=1.0)
  videos = random_videos((8, 2, 16, 16, 3))
  a = preprocess(videos, jax.random.key(7), cfg=cfg, train=True)
  b = preprocess(videos, jax.random.key(7), cfg=cfg, train=True)
  c = preprocess(videos, jax.random.key(8), cfg=cfg, train=True)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_sharded_batch_gives_the_unsharded_result():
  assert jax.device_count() == 8  # tests/conftest.py.
  cfg = make_cfg(random_erasing_prob=0.5)
  videos = random_videos((16, 2, 16, 16, 3))
  mesh = jax.make_mesh((8,), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  sharded = jax.device_put(videos, sharding)
  key = jax.random.key(11)
  out = preprocess(sharded, key, cfg=cfg, train=True)
  assert out.sharding.is_equivalent_to(sharding, out.ndim)
  np.testing.assert_array_equal(out, preprocess(videos, key, cfg=cfg, train=True))
  assert (np.asarray(out) != np.asarray(preprocess(videos, key, cfg=cfg, train=False))).any()
