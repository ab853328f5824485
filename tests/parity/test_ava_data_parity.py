"""AVA data against PySlowFast itself (the `pyslowfast==1.0` wheel's ava_helper, utils and cv2_transform): the same
frame paths, keyframes, merged boxes and labels from the same files, the same clip indices, and test-view boxes
within the two pixels its conventions make (W - 1 clipping, the long side's scale factor on both axes: see
mvit_jax/data/ava_transforms.py)."""
import types

import numpy as np
import pytest

from mvit_jax.data import ava
from mvit_jax.data import ava_transforms
from mvit_jax.data import config as config_lib
from mvit_jax.data import synthetic_ava

ava_helper = pytest.importorskip('slowfast.datasets.ava_helper')
sf_utils = pytest.importorskip('slowfast.datasets.utils')
cv2_transform = pytest.importorskip('slowfast.datasets.cv2_transform')


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('ava_parity'))
  synthetic_ava.write_dataset(root, num_videos=4, num_val_videos=2, seconds=7, fps=10, height=48, width=64, seed=3)
  return root


def slowfast_cfg(root):
  """The AVA keys PySlowFast's helpers read, pointing at the synthetic layout."""
  ava_keys = types.SimpleNamespace(
      FRAME_DIR=f'{root}/frames', FRAME_LIST_DIR=f'{root}/frame_lists', ANNOTATION_DIR=f'{root}/annotations',
      TRAIN_LISTS=['train.csv'], TEST_LISTS=['val.csv'], TRAIN_GT_BOX_LISTS=[synthetic_ava.TRAIN_GT],
      TRAIN_PREDICT_BOX_LISTS=[synthetic_ava.TRAIN_PROPOSALS], TEST_PREDICT_BOX_LISTS=[synthetic_ava.VAL_DETECTIONS],
      DETECTION_SCORE_THRESH=0.8, FULL_TEST_ON_VAL=True)  # Every second, as the papers' test (not val's sec % 4).
  return types.SimpleNamespace(AVA=ava_keys)


@pytest.mark.parametrize('split', ['train', 'eval'])
def test_keyframes_boxes_and_labels_equal_pyslowfasts(root, split):
  cfg = config_lib.default_data_config()
  synthetic_ava.configure(cfg, root, fps=10)
  source = ava.AvaSource(cfg, split, 4)
  sf = slowfast_cfg(root)
  image_paths, names = ava_helper.load_image_lists(sf, is_train=split == 'train')
  assert list(source._frames) == names
  for name, paths in zip(names, image_paths):
    assert list(source._frames[name]) == paths
  all_boxes = ava_helper.load_boxes_and_labels(sf, 'train' if split == 'train' else 'val')
  indices, boxes_and_labels = ava_helper.get_keyframe_data([all_boxes[name] for name in names])
  assert [(names[v], sec) for v, _, sec, _ in indices] == [(k.video, k.sec) for k in source.keyframes]
  for (video_idx, sec_idx, _, _), keyframe in zip(indices, source.keyframes):
    theirs = boxes_and_labels[video_idx][sec_idx]
    np.testing.assert_allclose(keyframe.boxes, [box for box, _ in theirs], rtol=0, atol=1e-6)
    assert [set(actions) for actions in keyframe.actions] == [set(labels) - {-1} for _, labels in theirs]


def test_clip_indices_equal_get_sequence():
  rng = np.random.default_rng(0)
  for _ in range(200):
    center, num_frames, rate = int(rng.integers(-5, 120)), int(rng.integers(1, 9)), int(rng.integers(1, 6))
    length = int(rng.integers(1, 100))
    expected = sf_utils.get_sequence(center, num_frames * rate // 2, rate, length)
    np.testing.assert_array_equal(ava.clip_frame_indices(center, num_frames, rate, length), expected)
  cfg = config_lib.default_data_config()
  assert ava.keyframe_center(1000, cfg) == (1000 - 900) * ava_helper.FPS


@pytest.mark.parametrize('view', ['center', 'full'])
def test_test_view_boxes_within_two_pixels_of_pyslowfasts(view):
  """PySlowFast's cv2 val ('center') and test ('full') paths on pixel boxes vs ours on normalised boxes."""
  rng = np.random.default_rng(1)
  height, width, crop = 240, 320, 224
  corners = np.sort(rng.uniform(-0.05, 1.05, (50, 2, 2)), axis=1)
  boxes = np.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], axis=1)
  cfg = config_lib.default_data_config()
  cfg.crop_size, cfg.ava_test_view = crop, view
  _, ours = ava_transforms.eval_clip(np.zeros((1, height, width, 3), np.uint8), boxes, cfg)
  theirs = cv2_transform.clip_boxes_to_image(boxes * [width, height, width, height], height, width)
  theirs = cv2_transform.scale_boxes(crop, theirs, height, width)
  new_h, new_w = ava_transforms.eval_shape(height, width, cfg) if view == 'full' else (crop, int(width * crop / height))
  if view == 'center':
    image = np.zeros((new_h, new_w, 3), np.float32)
    _, (theirs,) = cv2_transform.spatial_shift_crop_list(crop, [image], 1, boxes=[theirs])
    new_w = crop
  theirs = cv2_transform.clip_boxes_to_image(theirs, new_h, new_w)
  np.testing.assert_allclose(ours * [new_w, new_h, new_w, new_h], theirs, atol=2.0)  # Measured: <= 1.44.
