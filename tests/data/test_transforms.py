"""Clip transforms: crops land where they should, flips mirror, RandAugment is one draw per clip, clips stay uint8."""
import math

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from mvit_jax.data import device_preprocess
from mvit_jax.data import transforms
from mvit_jax.data.config import default_data_config


def position_clip(num_frames=2, height=20, width=24):
  """uint8 (T, H, W, 3) whose pixels encode their position: R = x, G = y, B = 10 * frame index."""
  ys, xs = np.mgrid[0:height, 0:width]
  frame = np.stack([xs, ys, np.zeros_like(xs)], -1)
  clip = np.stack([frame + [0, 0, 10 * t] for t in range(num_frames)])
  return clip.astype(np.uint8)


def smooth_clip(num_frames=3, height=40, width=56, seed=0):
  """uint8 (T, H, W, 3) smooth random images (different per frame)."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (num_frames, height // 8, width // 8, 3), dtype=np.uint8)
  return transforms.resize(small, height, width)


def identity_cfg(**overrides):
  """Config whose train transform only crops (no RandAugment or flip)."""
  cfg = default_data_config()
  cfg.update(dict(randaugment=False, random_flip=False, crop_size=16, test_short_side=20, random_resized_crop=False,
                  train_jitter_scales=(20, 20)))
  cfg.update(overrides)
  return cfg


# --- Geometry --------------------------------------------------------------------------------------------------


def test_short_side_shape_floors_long_side():
  assert transforms.short_side_shape(256, 340, 224) == (224, 297)  # floor(340 / 256 * 224) = floor(297.5).
  assert transforms.short_side_shape(340, 256, 224) == (297, 224)
  assert transforms.short_side_shape(256, 256, 320) == (320, 320)


def test_resize_short_side_keeps_a_linear_gradient():
  clip = position_clip(height=20, width=24)
  out = transforms.resize_short_side(clip, 40)  # Scale 2: output column j samples x = (j + 0.5) / 2 - 0.5.
  assert out.shape == (2, 40, 48, 3)
  expected_x = np.clip((np.arange(48) + 0.5) / 2 - 0.5, 0, 23)
  np.testing.assert_allclose(out[0, 5, :, 0], expected_x, atol=1)
  np.testing.assert_allclose(out[0, :, 5, 1], np.clip((np.arange(40) + 0.5) / 2 - 0.5, 0, 19), atol=1)


@pytest.mark.parametrize('height, width, spatial_idx, expected', [
    (20, 30, 0, (2, 0)), (20, 30, 1, (2, 7)), (20, 30, 2, (2, 14)),  # Landscape: left / centre / right.
    (30, 20, 0, (0, 2)), (30, 20, 1, (7, 2)), (30, 20, 2, (14, 2)),  # Portrait: top / centre / bottom.
    (16, 23, 1, (0, 4)),  # ceil((23 - 16) / 2) = 4.
])
def test_uniform_crop_box(height, width, spatial_idx, expected):
  assert transforms.uniform_crop_box(height, width, 16, spatial_idx) == (*expected, 16, 16)


def test_eval_transform_one_crop_is_the_centre():
  clip = position_clip(height=20, width=30)  # Short side already test_short_side: no resize.
  out = transforms.eval_transform(clip, spatial_idx=0, num_crops=1, cfg=identity_cfg())
  assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
  np.testing.assert_array_equal(out, clip[:, 2:18, 7:23])


@pytest.mark.parametrize('spatial_idx, left', [(0, 0), (1, 7), (2, 14)])
def test_eval_transform_three_crops_along_the_long_side(spatial_idx, left):
  clip = position_clip(height=16, width=30)  # Short side already crop_size: no resize.
  out = transforms.eval_transform(clip, spatial_idx, num_crops=3, cfg=identity_cfg())
  np.testing.assert_array_equal(out, clip[:, :, left:left + 16])


def test_eval_transform_resizes_short_side_first():
  clip = position_clip(height=10, width=15)
  out = transforms.eval_transform(clip, 1, 1, identity_cfg())  # Resized to 20 x 30, centre crop.
  expected_x = (np.arange(7, 23) + 0.5) / 2 - 0.5
  np.testing.assert_allclose(out[0, 8, :, 0], expected_x, atol=1)


def test_random_resized_crop_box_bounds_over_many_seeds():
  height, width, area, aspect = 64, 90, (0.08, 1.0), (3 / 4, 4 / 3)
  fallbacks = 0
  for seed in range(500):
    top, left, h, w = transforms.sample_random_resized_crop_box(np.random.default_rng(seed), height, width, area,
                                                                aspect)
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
    if (top, left, h, w) == (0, (width - 85) // 2, 64, 85):  # The fallback for this frame.
      fallbacks += 1
      continue
    # Rounding of h and w to integers moves area and aspect by at most this much.
    assert area[0] * height * width - (h + w) <= h * w <= area[1] * height * width + (h + w)
    assert aspect[0] * (1 - 1 / h) - 1 / h <= w / h <= aspect[1] * (1 + 1 / h) + 1 / h
  assert fallbacks < 25


def test_random_resized_crop_fallback_is_centred_with_clamped_aspect():
  rng = np.random.default_rng(0)
  # An area fraction above 1 never fits: the fallback is the largest centred box with aspect in range.
  assert transforms.sample_random_resized_crop_box(rng, 100, 300, (2.0, 3.0), (3 / 4, 4 / 3)) == (0, 83, 100, 133)
  assert transforms.sample_random_resized_crop_box(rng, 300, 100, (2.0, 3.0), (3 / 4, 4 / 3)) == (83, 0, 133, 100)
  assert transforms.sample_random_resized_crop_box(rng, 100, 110, (2.0, 3.0), (3 / 4, 4 / 3)) == (0, 0, 100, 110)


def test_random_resized_crop_takes_the_same_box_from_every_frame():
  clip = position_clip(num_frames=3, height=60, width=80)
  for seed in range(20):
    box = transforms.sample_random_resized_crop_box(np.random.default_rng(seed), 60, 80, (0.08, 1.0), (0.75, 1.33))
    out = transforms.random_resized_crop(clip, np.random.default_rng(seed), 16, (0.08, 1.0), (0.75, 1.33))
    top, left, h, w = box
    assert out.shape == (3, 16, 16, 3)
    # Position-encoded pixels stay inside the box (bilinear never leaves the sampled window).
    assert left <= out[..., 0].min() and out[..., 0].max() <= left + w - 1
    assert top <= out[..., 1].min() and out[..., 1].max() <= top + h - 1
    np.testing.assert_array_equal(out[..., :2], np.broadcast_to(out[:1, ..., :2], out[..., :2].shape))
    np.testing.assert_array_equal(out[:, 0, 0, 2], [0, 10, 20])
    # The box's corners map to the output's corners: x = left + (j + 0.5) * w / 16 - 0.5.
    assert abs(int(out[0, 0, 0, 0]) - (left + 0.5 * w / 16 - 0.5)) <= 1
    assert abs(int(out[0, 0, -1, 0]) - (left + 15.5 * w / 16 - 0.5)) <= 1


def test_short_side_jitter_crop_covers_every_offset():
  clip = position_clip(height=20, width=24)
  offsets = set()
  for seed in range(300):
    out = transforms.random_short_side_jitter_crop(clip, np.random.default_rng(seed), 16, (20, 20))
    left, top = int(out[0, 0, 0, 0]), int(out[0, 0, 0, 1])
    np.testing.assert_array_equal(out, clip[:, top:top + 16, left:left + 16])
    offsets.add((top, left))
  assert offsets == {(t, l) for t in range(5) for l in range(9)}


def _replay_jitter(seed, shape, size, scales, inverse_uniform=False):
  """The scale and the window of the resized frame that random_short_side_jitter_crop draws with `seed`."""
  rng = np.random.default_rng(seed)
  lo, hi = scales
  scale = int(round(1.0 / rng.uniform(1.0 / hi, 1.0 / lo))) if inverse_uniform else int(round(rng.uniform(lo, hi)))
  height, width = transforms.short_side_shape(*shape, scale)
  return scale, (height, width), (int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1)))


def test_short_side_jitter_crop_resizes_once_like_resize_then_crop():
  clip = smooth_clip(num_frames=3, height=48, width=64)
  for seed in range(20):
    out = transforms.random_short_side_jitter_crop(clip, np.random.default_rng(seed), 36, (36, 90))
    _, shape, (top, left) = _replay_jitter(seed, clip.shape[1:3], 36, (36, 90))
    two_step = transforms.crop(transforms.resize(clip, *shape), (top, left, 36, 36))
    diff = np.abs(out.astype(np.int16) - two_step)
    assert diff.max() <= 1 and diff.mean() < 0.3, (seed, diff.max(), diff.mean())


def test_short_side_jitter_scale_range():
  clip = smooth_clip(num_frames=1, height=16, width=24)
  medians = {}
  for inverse_uniform in (False, True):
    scales = []
    for seed in range(60):
      out = transforms.random_short_side_jitter_crop(clip, np.random.default_rng(seed), 38, (40, 120), inverse_uniform)
      scale, shape, (top, left) = _replay_jitter(seed, clip.shape[1:3], 38, (40, 120), inverse_uniform)
      two_step = transforms.crop(transforms.resize(clip, *shape), (top, left, 38, 38))
      assert np.abs(out.astype(np.int16) - two_step).max() <= 1
      scales.append(scale)
    assert min(scales) <= 45 and max(scales) >= 110
    medians[inverse_uniform] = np.median(scales)
  # Uniform scale: median 80. Uniform 1/scale: median 1 / mean(1/40, 1/120) = 60.
  assert 70 < medians[False] < 92 and 50 < medians[True] < 68
  with pytest.raises(ValueError, match='crop_size'):
    transforms.random_short_side_jitter_crop(clip, np.random.default_rng(0), 32, (20, 40))


def test_test_views_decode_at_the_size_they_are_cut_from():
  cfg = identity_cfg()
  cfg.test_short_side, cfg.crop_size = 40, 32
  cfg.test_num_crops = 1
  assert transforms.eval_short_side(cfg) == 40
  cfg.test_num_crops = 3  # PySlowFast: three crops along the long side of a crop_size short side.
  assert transforms.eval_short_side(cfg) == 32
  clip = smooth_clip(num_frames=2, height=32, width=48)  # Decoded at eval_short_side: cropped, not resized.
  np.testing.assert_array_equal(transforms.eval_transform(clip, 2, 3, cfg), clip[:, :, 16:48])


def test_horizontal_flip_mirrors_every_frame():
  clip = position_clip(num_frames=3)
  out = transforms.horizontal_flip(clip[:, 2:18, 3:19])  # Also on a non-contiguous view.
  np.testing.assert_array_equal(out[..., 0], 21 - clip[:, 2:18, 3:19, 0])  # x in 3..18 -> 18..3.
  np.testing.assert_array_equal(out[..., 1:], clip[:, 2:18, 3:19, 1:])


def test_train_transform_flips_about_half_the_clips():
  clip = position_clip(height=16, width=16)
  cfg = identity_cfg(random_flip=True, train_jitter_scales=(16, 16))
  flips = 0
  for seed in range(200):
    out = transforms.train_transform(clip, np.random.default_rng(seed), cfg)
    flipped = out[0, 0, 0, 0] == 15
    np.testing.assert_array_equal(out[..., 0], 15 - clip[..., 0] if flipped else clip[..., 0])
    flips += flipped
  assert 70 < flips < 130


# --- RandAugment -----------------------------------------------------------------------------------------------


def test_rand_augment_level_args_hand_computed():
  rng = np.random.default_rng(0)
  assert transforms.rand_augment_level_args('PosterizeIncreasing', 7, rng) == (2,)   # 4 - int(2.8).
  assert transforms.rand_augment_level_args('SolarizeIncreasing', 7, rng) == (77,)   # 256 - int(179.2).
  assert transforms.rand_augment_level_args('SolarizeAdd', 7, rng) == (77,)          # int(77.0).
  assert transforms.rand_augment_level_args('Equalize', 7, rng) == ()
  for name, magnitude in [('Rotate', 21.0), ('ShearX', 0.21), ('TranslateYRel', 0.315)]:
    (value,) = transforms.rand_augment_level_args(name, 7, rng)
    assert math.isclose(abs(value), magnitude)
  signs = {np.sign(transforms.rand_augment_level_args('ColorIncreasing', 7, rng)[0] - 1) for _ in range(50)}
  assert signs == {-1.0, 1.0}
  (factor,) = transforms.rand_augment_level_args('BrightnessIncreasing', 10, rng)
  assert math.isclose(abs(factor - 1), 0.9)


def test_sample_rand_augment_draws():
  counts = []
  for seed in range(400):
    ops = transforms.sample_rand_augment(np.random.default_rng(seed), num_layers=4, magnitude=7, magnitude_std=0.5)
    assert all(name in transforms.RAND_AUGMENT_OPS for name, _ in ops)
    counts.append(len(ops))
  assert max(counts) == 4 and min(counts) == 0
  assert abs(np.mean(counts) - 2.0) < 0.2  # Each of the 4 layers runs with probability 0.5.
  assert (transforms.sample_rand_augment(np.random.default_rng(3), 4, 7, 0.5)
          == transforms.sample_rand_augment(np.random.default_rng(3), 4, 7, 0.5))


def _pil_on_frames(clip, fn):
  return np.stack([np.asarray(fn(Image.fromarray(f))) for f in clip])


@pytest.mark.parametrize('name, args, pil_fn', [
    ('Invert', (), ImageOps.invert),
    ('PosterizeIncreasing', (2,), lambda im: ImageOps.posterize(im, 2)),
    ('PosterizeIncreasing', (0,), lambda im: Image.new('RGB', im.size)),  # Old Pillow; Pillow 13 refuses 0.
    ('SolarizeIncreasing', (77,), lambda im: ImageOps.solarize(im, 77)),
    ('SolarizeAdd', (77,), lambda im: im.point([min(255, i + 77) if i < 128 else i for i in range(256)] * 3)),
    ('BrightnessIncreasing', (1.63,), lambda im: ImageEnhance.Brightness(im).enhance(1.63)),
    ('BrightnessIncreasing', (0.37,), lambda im: ImageEnhance.Brightness(im).enhance(0.37)),
    ('AutoContrast', (), ImageOps.autocontrast),
    ('Equalize', (), ImageOps.equalize),
    ('TranslateXRel', (0.25,), lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 14, 0, 1, 0),
                                                       resample=Image.BICUBIC, fillcolor=(128, 128, 128))),
    ('TranslateYRel', (-0.3,), lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, -12),
                                                       resample=Image.BICUBIC, fillcolor=(128, 128, 128))),
])
def test_rand_augment_ops_match_pillow_exactly(name, args, pil_fn):
  # 40 x 56 (the translations above are whole pixels); a low-contrast and a flat frame exercise AutoContrast's
  # and Equalize's special cases.
  clip = np.concatenate([smooth_clip(), smooth_clip(num_frames=1, seed=1) // 3 + 60, np.full((1, 40, 56, 3), 9,
                                                                                              np.uint8)])
  np.testing.assert_array_equal(transforms.rand_augment_op(name, args)(clip), _pil_on_frames(clip, pil_fn))


@pytest.mark.parametrize('name, args, pil_fn', [
    ('ContrastIncreasing', (1.63,), lambda im: ImageEnhance.Contrast(im).enhance(1.63)),
    ('ContrastIncreasing', (0.37,), lambda im: ImageEnhance.Contrast(im).enhance(0.37)),
    ('ColorIncreasing', (1.81,), lambda im: ImageEnhance.Color(im).enhance(1.81)),
    ('ColorIncreasing', (0.19,), lambda im: ImageEnhance.Color(im).enhance(0.19)),
    ('SharpnessIncreasing', (1.9,), lambda im: ImageEnhance.Sharpness(im).enhance(1.9)),
    ('SharpnessIncreasing', (0.1,), lambda im: ImageEnhance.Sharpness(im).enhance(0.1)),
])
def test_rand_augment_blend_ops_match_pillow_within_one_level(name, args, pil_fn):
  # Pillow computes the grey and smoothed images with its own fixed-point rounding: allow one grey level.
  clip = np.concatenate([smooth_clip(), smooth_clip(seed=1)[:, ::-1] // 2])
  diff = np.abs(transforms.rand_augment_op(name, args)(clip).astype(int) - _pil_on_frames(clip, pil_fn))
  assert diff.max() <= 1 and (diff == 0).mean() > 0.95


@pytest.mark.parametrize('name, args, pil_fn', [
    ('Rotate', (21.0,), lambda im: im.rotate(21.0, resample=Image.BICUBIC, fillcolor=(128, 128, 128))),
    ('Rotate', (-13.0,), lambda im: im.rotate(-13.0, resample=Image.BICUBIC, fillcolor=(128, 128, 128))),
    ('ShearX', (0.21,), lambda im: im.transform(im.size, Image.AFFINE, (1, 0.21, 0, 0, 1, 0),
                                                resample=Image.BICUBIC, fillcolor=(128, 128, 128))),
    ('ShearY', (-0.21,), lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, -0.21, 1, 0),
                                                 resample=Image.BICUBIC, fillcolor=(128, 128, 128))),
])
def test_rand_augment_affine_ops_follow_pillow_geometry(name, args, pil_fn):
  # OpenCV's bicubic kernel differs slightly from Pillow's and the fill edge is anti-aliased differently: compare
  # away from the fill boundary.
  clip = smooth_clip(height=80, width=112)
  ours = transforms.rand_augment_op(name, args)(clip).astype(int)
  pil = _pil_on_frames(clip, pil_fn).astype(int)
  diff = np.abs(ours - pil)
  assert np.median(diff) <= 1 and np.percentile(diff, 95) <= 3


@pytest.mark.parametrize('name', transforms.RAND_AUGMENT_OPS)
def test_every_rand_augment_op_is_the_same_on_every_frame(name):
  clip = smooth_clip(num_frames=3)
  args = transforms.rand_augment_level_args(name, 9, np.random.default_rng(1))
  op = transforms.rand_augment_op(name, args)
  out = op(clip)
  assert out.shape == clip.shape and out.dtype == np.uint8
  for t in range(3):  # Frame t of the clip result is the op applied to frame t alone.
    np.testing.assert_array_equal(out[t], op(clip[t:t + 1])[0])
  same = op(np.repeat(clip[:1], 3, axis=0))
  np.testing.assert_array_equal(same, np.broadcast_to(same[:1], same.shape))
  if name not in ('AutoContrast', 'Equalize'):  # These may leave an already-stretched image unchanged.
    assert not np.array_equal(out, clip)


def test_rand_augment_keeps_identical_frames_identical():
  frame = smooth_clip(num_frames=1)
  clip = np.repeat(frame, 4, axis=0)
  changed = 0
  for seed in range(40):
    out = transforms.rand_augment(clip, np.random.default_rng(seed), num_layers=4, magnitude=9, magnitude_std=0.5)
    np.testing.assert_array_equal(out, np.broadcast_to(out[:1], out.shape))
    changed += not np.array_equal(out, clip)
  assert changed >= 30


# --- Full transforms -------------------------------------------------------------------------------------------


def test_train_transform_default_recipe_shapes_and_determinism():
  cfg = default_data_config()
  cfg.crop_size = 32
  clip = smooth_clip(num_frames=4, height=48, width=64)
  a = transforms.train_transform(clip, np.random.default_rng(7), cfg)
  b = transforms.train_transform(clip, np.random.default_rng(7), cfg)
  c = transforms.train_transform(clip, np.random.default_rng(8), cfg)
  assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_train_transform_jitter_path_and_input_checks():
  cfg = default_data_config()
  cfg.update(dict(crop_size=16, random_resized_crop=False, train_jitter_scales=(20, 24),
                  inverse_uniform_sampling=True))
  out = transforms.train_transform(smooth_clip(height=40, width=56), np.random.default_rng(0), cfg)
  assert out.shape == (3, 16, 16, 3)
  with pytest.raises(ValueError, match='uint8'):
    transforms.train_transform(np.zeros((2, 20, 20, 3), np.float32), np.random.default_rng(0), cfg)
  with pytest.raises(ValueError, match='test_num_crops'):
    transforms.eval_transform(smooth_clip(), 0, 2, cfg)


def test_transforms_leave_normalisation_and_erasing_to_the_device():
  clip = smooth_clip(num_frames=2, height=48, width=64)
  cfg = default_data_config()
  cfg.update(dict(crop_size=24, randaugment_interpolation='bilinear', random_erasing_prob=0.0))
  crop = transforms.train_transform(clip, np.random.default_rng(3), cfg)
  assert crop.dtype == np.uint8 and crop.shape == (2, 24, 24, 3)
  cfg.mean, cfg.std, cfg.random_erasing_prob = (0.1, 0.2, 0.3), (0.5, 0.5, 0.5), 1.0  # Same draws, same pixels.
  np.testing.assert_array_equal(transforms.train_transform(clip, np.random.default_rng(3), cfg), crop)


def test_normalising_after_the_crop_matches_pyslowfast_order():
  # PySlowFast normalises float frames, then crops and resizes them; we resize uint8 and normalise last.
  cfg = default_data_config()
  clip = smooth_clip(num_frames=2, height=48, width=64)
  ours = device_preprocess.normalize(transforms.random_resized_crop(clip, np.random.default_rng(5), 24, cfg.rrc_area,
                                                                    cfg.rrc_aspect), cfg.mean, cfg.std)
  top, left, h, w = transforms.sample_random_resized_crop_box(np.random.default_rng(5), 48, 64, cfg.rrc_area,
                                                              cfg.rrc_aspect)
  normalised = (clip / 255.0 - np.array(cfg.mean)) / np.array(cfg.std)
  theirs = np.stack([cv2.resize(f[top:top + h, left:left + w].astype(np.float32), (24, 24),
                                interpolation=cv2.INTER_LINEAR) for f in normalised])
  np.testing.assert_allclose(ours, theirs, atol=1.01 / 255 / 0.225)  # One uint8 level.


def _pytorch_bilinear_weights(in_size, out_size):
  """PyTorch `interpolate(mode='bilinear', align_corners=False)` along one axis as an (out, in) matrix."""
  src = np.maximum((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0)
  i0 = src.astype(int)
  i1 = np.minimum(i0 + 1, in_size - 1)
  weights = np.zeros((out_size, in_size))
  np.add.at(weights, (np.arange(out_size), i0), 1 - (src - i0))
  np.add.at(weights, (np.arange(out_size), i1), src - i0)
  return weights


def test_bilinear_resize_is_pytorch_interpolate():
  clip = smooth_clip(num_frames=2, height=40, width=56)
  for height, width in [(24, 30), (64, 90)]:  # Down- and up-sampling.
    ours = transforms.resize(clip, height, width).astype(np.float64)
    theirs = np.einsum('yh,thwc,xw->tyxc', _pytorch_bilinear_weights(40, height), clip.astype(np.float64),
                       _pytorch_bilinear_weights(56, width))
    np.testing.assert_allclose(ours, theirs, atol=1.0)
