"""PySlowFast clip sampling, checked against hand-computed frame indices."""
import numpy as np
import pytest

from mvit_jax.data import config as config_lib
from mvit_jax.data import sampling


class FixedUniform:
  """Stands in for np.random.Generator: uniform() returns a chosen value (records its bounds)."""

  def __init__(self, value):
    self.value, self.bounds = value, None

  def uniform(self, low, high):
    self.bounds = (low, high)
    return self.value


def test_clip_size_converts_target_fps_to_source_frames():
  assert sampling.clip_size(16, 4, 30, 30) == 64
  assert sampling.clip_size(16, 4, 30, 60) == 128      # A 60 fps video: the same 2.13 s span is 128 frames.
  assert sampling.clip_size(8, 8, 30, 25) == pytest.approx(53.3333, abs=1e-4)
  assert sampling.clip_size(1, 1, 30, 10) == 1         # Never below one frame.


def test_offset_test_clips_run_from_first_to_last_start():
  # 300 frames, 64-frame clips: delta = 236, floor(236 / 4) = 59.
  starts = [sampling.start_end(300, 64, i, 5)[0] for i in range(5)]
  assert starts == [0, 59, 118, 177, 236]
  assert sampling.start_end(300, 64, 4, 5) == (236, 299)
  assert sampling.start_end(300, 64, 0, 1) == (118, 181)  # One clip: the centre, floor(236 / 2).


def test_non_offset_test_clips_never_reach_the_end():
  starts = [sampling.start_end(300, 64, i, 5, use_offset=False)[0] for i in range(5)]
  np.testing.assert_allclose(starts, [0, 47.2, 94.4, 141.6, 188.8])


def test_clip_indices_are_truncated_linspace():
  # linspace(118, 181, 16) steps 4.2 frames; int() truncates.
  expected = [118, 122, 126, 130, 134, 139, 143, 147, 151, 155, 160, 164, 168, 172, 176, 181]
  np.testing.assert_array_equal(sampling.clip_indices(118, 181, 16, 300), expected)


def test_short_video_repeats_last_frame():
  # 3 frames, T=8 tau=4 at 30 fps: span 32, delta 0, linspace(0, 31, 8) = 0, 4.4, ... clamped to frame 2.
  cfg = config_lib.default_data_config()
  cfg.num_frames, cfg.sampling_rate, cfg.test_num_clips = 8, 4, 3
  for clip_idx in range(3):
    np.testing.assert_array_equal(sampling.test_clip_indices(3, 30.0, clip_idx, cfg), [0, 2, 2, 2, 2, 2, 2, 2])


def test_train_clip_uses_uniform_start_in_zero_delta():
  cfg = config_lib.default_data_config()
  cfg.num_frames, cfg.sampling_rate, cfg.target_fps = 4, 2, 30.0
  rng = FixedUniform(10.5)
  # 60 fps: span 4*2*60/30 = 16 frames, delta = 100 - 16 = 84; start 10.5, end 25.5, step 5.
  np.testing.assert_array_equal(sampling.train_clip_indices(100, 60.0, cfg, rng), [10, 15, 20, 25])
  assert rng.bounds == (0.0, 84.0)


def test_train_clips_stay_inside_the_video():
  cfg = config_lib.default_data_config()
  rng = np.random.default_rng(0)
  firsts = []
  for _ in range(200):
    idx = sampling.train_clip_indices(100, 30.0, cfg, rng)  # span 64, delta 36.
    assert idx.shape == (16,) and idx[0] >= 0 and idx[-1] <= 99
    assert np.all(np.diff(idx) >= 4) and np.all(np.diff(idx) <= 5)  # linspace step 63/15 = 4.2.
    firsts.append(idx[0])
  assert min(firsts) <= 2 and max(firsts) >= 33  # Starts cover [0, 36].


def test_segment_sampling_middles_and_random_frames():
  # 31 frames, 4 segments of 7.5: bounds round(0, 7.5, 15, 22.5, 30) = 0, 8, 15, 22, 30.
  np.testing.assert_array_equal(sampling.segment_indices(31, 4, None), [4, 11, 18, 26])
  rng = np.random.default_rng(1)
  draws = np.stack([sampling.segment_indices(31, 4, rng) for _ in range(300)])
  np.testing.assert_array_equal(draws.min(0), [0, 8, 15, 22])
  np.testing.assert_array_equal(draws.max(0), [8, 15, 22, 30])


def test_segment_sampling_ignores_sampling_rate_and_clip_index():
  cfg = config_lib.default_data_config()
  cfg.segment_sampling, cfg.num_frames = True, 4
  for clip_idx in range(3):
    np.testing.assert_array_equal(sampling.test_clip_indices(31, 30.0, clip_idx, cfg), [4, 11, 18, 26])


def test_views_run_crop_fastest_and_single_crop_is_centre():
  assert [sampling.test_view(v, 3) for v in range(6)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
  assert [sampling.test_view(v, 1) for v in range(3)] == [(0, 1), (1, 1), (2, 1)]
