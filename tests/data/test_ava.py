"""AVA data: parsing against hand-written files, keyframe clips, box merging and proposals, the synthetic data set,
frames vs video files, box transforms, loaders (resume, eval coverage, bad input)."""
import numpy as np
import pytest

from mvit_jax.data import ava
from mvit_jax.data import ava_transforms
from mvit_jax.data import config as config_lib
from mvit_jax.data import sources
from mvit_jax.data import synthetic_ava

LABEL_MAP = '''item {
  name: "bend/bow (at the waist)"
  id: 1
}
item {
  name: "talk to (e.g., self, a person, a group)"
  id: 79
}
'''

# Two videos; at (vid_a, 902) box A has actions 3 and 5 (two rows), box B none; the proposal repeating A's text
# merges into it, a low-score proposal is left out, second 901 is outside the valid seconds.
GT = '''vid_a,902,0.1,0.2,0.3,0.4,3,0
vid_a,902,0.1,0.2,0.3,0.4,5,0
vid_a,902,0.5,0.5,0.9,0.9,,1
vid_a,901,0.1,0.2,0.3,0.4,3,0
vid_b,905,0.0,0.0,1.0,1.0,80,0
'''
PROPOSALS = '''vid_a,902,0.1,0.2,0.3,0.4,7,0.95
vid_a,902,0.11,0.2,0.3,0.4,,0.85
vid_a,902,0.6,0.6,0.7,0.7,2,0.5
vid_a,903,0.2,0.2,0.4,0.4,,0.8
'''


def write(path, text):
  path.write_text(text)
  return str(path)


def test_label_map_both_formats(tmp_path):
  assert ava.read_label_map(write(tmp_path / 'a.pbtxt', LABEL_MAP)) == {
      1: 'bend/bow (at the waist)', 79: 'talk to (e.g., self, a person, a group)'}
  v22 = 'label {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n  label_type: PERSON_MOVEMENT\n}\n'
  assert ava.read_label_map(write(tmp_path / 'b.pbtxt', v22)) == {1: 'bend/bow (at the waist)'}
  assert ava.num_classes(str(tmp_path / 'a.pbtxt')) == 79
  with pytest.raises(ava.AvaError, match='no `item'):
    ava.read_label_map(write(tmp_path / 'c.pbtxt', 'nothing\n'))


def test_frame_lists_keep_order_and_compact_numbered_paths(tmp_path):
  rows = ['original_vido_id video_id frame_id path labels']
  rows += [f'v1 0 {i} v1/v1_{i + 1:06d}.jpg ""' for i in range(5)]
  rows += ['v0 1 0 v0/odd.jpg ""', 'v0 1 1 v0/v0_000009.jpg ""', 'v0 1 2 v0/v0_000010.jpg ""']
  videos = ava.read_frame_lists([write(tmp_path / 'l.csv', '\n'.join(rows) + '\n')], '/frames')
  assert list(videos) == ['v1', 'v0']
  assert list(videos['v1']) == [f'/frames/v1/v1_{i:06d}.jpg' for i in range(1, 6)]
  assert list(videos['v0']) == ['/frames/v0/odd.jpg', '/frames/v0/v0_000009.jpg', '/frames/v0/v0_000010.jpg']
  assert len(videos['v1']._runs) == 1 and videos['v1'][-1] == '/frames/v1/v1_000005.jpg'
  with pytest.raises(ava.AvaError, match=r'l2.csv:2: expected'):
    ava.read_frame_lists([write(tmp_path / 'l2.csv', 'header\nv0 1 v0/x.jpg\n')], '')


def test_boxes_merge_by_coordinates_with_thresholds_and_valid_seconds(tmp_path):
  files = [(write(tmp_path / 'gt.csv', GT), True), (write(tmp_path / 'p.csv', PROPOSALS), False)]
  merged = ava.merge_boxes(files, score_thresh=0.8, valid_secs=(902, 1798))
  assert sorted(merged['vid_a']) == [902, 903]
  assert merged['vid_a'][902] == [((0.1, 0.2, 0.3, 0.4), [3, 5, 7]), ((0.5, 0.5, 0.9, 0.9), [-1]),
                                  ((0.11, 0.2, 0.3, 0.4), [-1])]
  assert merged['vid_a'][903] == [((0.2, 0.2, 0.4, 0.4), [-1])]  # Score 0.8 >= 0.8 is kept.
  keyframes = ava.keyframes_of(merged, ['vid_b', 'vid_a', 'vid_c'])
  assert [(k.video, k.sec) for k in keyframes] == [('vid_b', 905), ('vid_a', 902), ('vid_a', 903)]
  assert keyframes[1].actions == ((3, 5, 7), (), ())
  np.testing.assert_allclose(keyframes[1].boxes, [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9],
                                                  [0.11, 0.2, 0.3, 0.4]])
  # Shorter videos: other valid seconds.
  assert sorted(ava.merge_boxes(files, score_thresh=0.8, valid_secs=(901, 902))['vid_a']) == [901, 902]


@pytest.mark.parametrize('line,match', [('v,902,0.1,0.2,0.3\n', 'expected'), ('v,x,0.1,0.2,0.3,0.4,1,1\n', 'number'),
                                        ('v,902,0.3,0.2,0.1,0.4,1,1\n', 'x1 <= x2'),
                                        ('v,902,0.1,0.2,0.3,0.4,0,1\n', '>= 1')])
def test_bad_box_rows_name_file_and_line(tmp_path, line, match):
  path = write(tmp_path / 'b.csv', 'v,902,0.1,0.2,0.3,0.4,1,1\n' + line)
  with pytest.raises(ava.AvaError, match=rf'b.csv:2: .*{match}'):
    ava.read_box_rows(path)


def test_proposals_take_the_actions_of_a_box_they_overlap_with_iou_above_0_9():
  gt = np.array([[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]])
  proposals = np.array([[0.0, 0.0, 0.5, 0.96],    # IoU 0.96 with gt 0.
                        [0.0, 0.0, 0.5, 0.88],    # IoU 0.88.
                        [0.52, 0.0, 1.0, 1.0],    # IoU 0.96 with gt 1.
                        [0.25, 0.0, 0.75, 1.0]])  # IoU 1/3 with both.
  np.testing.assert_allclose(ava.box_iou(proposals, gt)[:, 0], [0.96, 0.88, 0.0, 1 / 3])
  assert ava.label_proposals(proposals, gt, [(1, 4), (2,)]) == [(1, 4), (), (2,), ()]
  assert ava.label_proposals(proposals, np.zeros((0, 4)), []) == [(), (), (), ()]


def test_clip_indices_are_centred_on_the_keyframe_and_clamped():
  # T=4, tau=2 around frame 60: range(56, 64, 2).
  np.testing.assert_array_equal(ava.clip_frame_indices(60, 4, 2, 100), [56, 58, 60, 62])
  np.testing.assert_array_equal(ava.clip_frame_indices(2, 4, 2, 100), [0, 0, 2, 4])        # Start clamped.
  np.testing.assert_array_equal(ava.clip_frame_indices(98, 4, 3, 100), [92, 95, 98, 99])   # range(92, 104, 3).
  np.testing.assert_array_equal(ava.clip_frame_indices(98, 4, 3, None), [92, 95, 98, 101])
  cfg = config_lib.default_data_config()
  assert ava.keyframe_center(902, cfg) == 60 and ava.keyframe_center(1798, cfg) == 898 * 30


def test_video_clip_indices_of_an_original_ava_video_at_25_fps():
  """Time 0 at second 0 (ava_video_start_sec 0): the folder clip 56, 58, 60, 62 of second 902 is at 900 + i / 30 s,
  i.e. frames 22546.7, 22548.3, 22550, 22551.7 at 25 fps -> the nearest frames."""
  cfg = config_lib.default_data_config()
  cfg.num_frames, cfg.sampling_rate, cfg.ava_video_start_sec = 4, 2, 0
  np.testing.assert_array_equal(ava.video_clip_indices(902, 30000, 25.0, cfg), [22547, 22548, 22550, 22552])
  np.testing.assert_array_equal(ava.video_clip_indices(902, 22549, 25.0, cfg), [22547, 22548, 22548, 22548])
  cfg.ava_video_start_sec = 900  # A 15-minute cut: the folder's frames at 30 fps are the video's.
  np.testing.assert_array_equal(ava.video_clip_indices(902, 1000, 30.0, cfg), [56, 58, 60, 62])


# --- The synthetic data set and the two clip sources ---------------------------------------------------------------

SECONDS, FPS = 6, 10


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('ava'))
  synthetic_ava.write_dataset(root, num_videos=4, num_val_videos=1, seconds=SECONDS, fps=FPS, height=48, width=64,
                              seed=1)
  return root


def synthetic_config(root, videos=False, **overrides):
  cfg = config_lib.default_data_config()
  synthetic_ava.configure(cfg, root, fps=FPS, videos=videos)
  cfg.num_frames, cfg.sampling_rate, cfg.crop_size = 4, 2, 32
  cfg.train_jitter_scales, cfg.random_resized_crop, cfg.randaugment = (32, 40), False, False
  cfg.num_repeated_samples, cfg.num_workers, cfg.ava_max_boxes = 1, 0, 8
  cfg.update(overrides)
  return cfg


def test_synthetic_data_set_reads_as_ava(synthetic_root):
  cfg = synthetic_config(synthetic_root)
  assert ava.num_classes_from_config(cfg) == 4
  assert sources.class_names_from_config(cfg) == ['walk', 'run', 'jump', 'wave']
  assert sources.num_classes_from_config(cfg) == 4
  train = ava.AvaSource(cfg, 'train', 4)
  keyframe_secs = list(range(902, 900 + SECONDS - 1))  # 902 .. 904
  assert [(k.video, k.sec) for k in train.keyframes] == [(f'video00{v}', s) for v in range(3) for s in keyframe_secs]
  gt = ava.merge_boxes([(ava.annotation_path(cfg, 'ava_train_gt_boxes'), True)], score_thresh=0.8,
                       valid_secs=(902, 1798))
  for i, keyframe in enumerate(train.keyframes):
    people = gt[keyframe.video][keyframe.sec]
    assert 2 <= len(people) <= 3 and all(actions for _, actions in people)
    np.testing.assert_allclose(keyframe.boxes[:len(people)], [box for box, _ in people])  # Ground truth first,
    assert len(keyframe.boxes) > len(people)                                              # then proposals.
    hot = train.multi_hot(i)
    assert hot.shape == (len(keyframe.boxes), 4) and hot[:len(people)].sum(1).min() >= 1
    assert not hot[len(people):].any(1).all()  # Some proposals are negatives (idle person, background).
  val = ava.AvaSource(cfg, 'eval', 4)
  assert ava.keyframe_list(cfg) == [('video003', s) for s in keyframe_secs] == [(k.video, k.sec) for k in
                                                                                 val.keyframes]
  other = str(synthetic_root) + '_again'
  synthetic_ava.write_dataset(other, num_videos=4, num_val_videos=1, seconds=SECONDS, fps=FPS, height=48, width=64,
                              seed=1)
  for name in (synthetic_ava.TRAIN_GT, synthetic_ava.TRAIN_PROPOSALS, synthetic_ava.VAL_DETECTIONS):  # Seeded.
    assert open(f'{other}/annotations/{name}').read() == open(f'{synthetic_root}/annotations/{name}').read()


def test_boxes_of_a_video_missing_from_the_frame_lists_name_the_files(synthetic_root, tmp_path):
  cfg = synthetic_config(synthetic_root, ava_frame_list_train=write(tmp_path / 'short.csv', 'header\n'))
  with pytest.raises(ava.AvaError, match=r'video video000 \(and 2 more\) not in the frame lists .*short.csv'):
    ava.AvaSource(cfg, 'train', 4)


def test_no_keyframe_in_the_valid_seconds_is_one_line(synthetic_root):
  with pytest.raises(ava.AvaError, match=r'ava_detection_val_boxes_and_labels.csv: no box in seconds 1000-1798 '
                                         r'\(ava_valid_secs\) with score >= 0.8'):
    ava.AvaSource(synthetic_config(synthetic_root, ava_valid_secs=(1000, 1798)), 'eval', 4)


def psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize('sampling_rate', [2, 20])  # 20: T x tau = 80 frames, clamped at both ends.
def test_frames_and_video_files_give_the_same_clip(synthetic_root, sampling_rate):
  frames = ava.AvaSource(synthetic_config(synthetic_root, sampling_rate=sampling_rate), 'train', 4)
  videos = ava.AvaSource(synthetic_config(synthetic_root, videos=True, sampling_rate=sampling_rate), 'train', 4)
  for i in (0, 2, 4):
    a, b = frames.load(i), videos.load(i)
    assert a.shape == b.shape == (4, 48, 64, 3)
    assert psnr(a, b) >= 35
  if sampling_rate == 20:  # Keyframe 902: range(-20, 60, 20) -> 0, 0, 20, 40; 904: range(0, 80, 20) -> ..., 59.
    np.testing.assert_array_equal(frames.clip_indices(902, 60), [0, 0, 20, 40])
    np.testing.assert_array_equal(frames.clip_indices(904, 60), [0, 20, 40, 59])
    first = frames.load(0)
    assert np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
  assert frames.frame_size(0) == videos.frame_size(0) == (48, 64)


# --- Transforms with boxes ---------------------------------------------------------------------------------------


def test_window_and_flip_boxes_by_hand():
  # A (100, 200) frame resized to (50, 100), window top 10, left 20, 32 x 32: x * 100 - 20, y * 50 - 10, clipped.
  out = ava_transforms.window_boxes(np.array([[0.1, 0.2, 0.5, 0.6], [0.9, 0.9, 1.0, 1.0]]), (50, 100),
                                    (10, 20, 32, 32))
  np.testing.assert_allclose(out, [[0, 0, 30 / 32, 20 / 32], [1, 1, 1, 1]])  # The second left the crop: clipped.
  np.testing.assert_allclose(ava_transforms.flip_boxes(np.array([[0.1, 0.2, 0.5, 0.6]])), [[0.5, 0.2, 0.9, 0.6]])


def box_clip(height, width, box, num_frames=2):
  """Black frames with the pixels inside normalised `box` white: (T, H, W, 3) uint8."""
  frames = np.zeros((num_frames, height, width, 3), np.uint8)
  x1, y1, x2, y2 = np.round(np.array(box) * [width, height, width, height]).astype(int)
  frames[:, y1:y2, x1:x2] = 255
  return frames


def assert_box_on_white(frames, box, tol=1.5):
  """The white region of frames[0] is `box` (normalised to it) within `tol` pixels."""
  h, w = frames.shape[1:3]
  ys, xs = np.nonzero(frames[0, ..., 0] > 127)
  x1, y1, x2, y2 = np.array(box) * [w, h, w, h]
  if not len(xs):
    assert min(x2 - x1, y2 - y1) < tol
    return
  np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [x1, y1, x2, y2], atol=tol)


@pytest.mark.parametrize('seed', range(6))
def test_train_boxes_follow_the_random_crop_and_flip(seed):
  cfg = config_lib.default_data_config()
  cfg.crop_size, cfg.train_jitter_scales = 48, (56, 80)
  box = [0.3, 0.25, 0.55, 0.8]
  frames, boxes = ava_transforms.train_clip(box_clip(60, 90, box), np.array([box, [0, 0, 1, 1]]),
                                            np.random.default_rng(seed), cfg)
  assert frames.shape == (2, 48, 48, 3) and boxes.dtype == np.float32
  assert_box_on_white(frames, boxes[0])
  np.testing.assert_allclose(boxes[1], [0, 0, 1, 1])  # The whole frame: clipped to the whole crop.


def test_eval_views_by_hand():
  cfg = config_lib.default_data_config()
  cfg.crop_size = 30
  box = [0.25, 0.0, 0.5, 1.0]
  frames = box_clip(60, 80, box)
  # 'center': short side 30 -> (30, 40), centre crop left ceil(10 / 2) = 5: x 10 - 5, 20 - 5 of 30.
  out, boxes = ava_transforms.eval_clip(frames, np.array([box]), cfg)
  assert out.shape == (2, 30, 30, 3)
  np.testing.assert_allclose(boxes, [[5 / 30, 0, 15 / 30, 1]], rtol=1e-6)
  assert_box_on_white(out, boxes[0])
  cfg.ava_test_view = 'full'
  out, boxes = ava_transforms.eval_clip(frames, np.array([box]), cfg)
  assert out.shape == (2, 30, 40, 3) and ava_transforms.eval_shape(60, 80, cfg) == (30, 40)
  np.testing.assert_allclose(boxes, [box])
  assert_box_on_white(out, boxes[0])
  cfg.ava_test_view = 'left'
  with pytest.raises(ValueError, match='ava_test_view'):
    ava_transforms.eval_clip(frames, np.array([box]), cfg)


# --- Loaders -----------------------------------------------------------------------------------------------------


def train_iterator(cfg, **kwargs):
  return ava.make_ava_train_iterator(cfg, **{'num_classes': 4, 'global_batch_size': 4, 'seed': 0,
                                             'process_index': 0, 'process_count': 1, **kwargs})


def eval_batches(cfg, **kwargs):
  it = ava.make_ava_eval_iterator(cfg, **{'num_classes': 4, 'global_batch_size': 2, 'process_index': 0,
                                          'process_count': 1, **kwargs})
  batches = list(it)
  it.close()
  return batches


def test_train_batches_hold_padded_boxes_and_labels(synthetic_root):
  cfg = synthetic_config(synthetic_root, ava_max_boxes=6)
  source = ava.AvaSource(cfg, 'train', 4)
  it = train_iterator(cfg)
  batch = next(it)
  assert set(batch) == {'video', 'boxes', 'box_mask', 'labels'}
  assert batch['video'].shape == (4, 4, 32, 32, 3) and batch['video'].dtype == np.uint8
  assert batch['boxes'].shape == (4, 6, 4) and batch['boxes'].dtype == np.float32
  assert batch['box_mask'].dtype == bool and batch['labels'].shape == (4, 6, 4)
  assert batch['labels'].dtype == np.float32
  counts = batch['box_mask'].sum(1)
  assert set(counts.tolist()) <= {min(len(k.boxes), 6) for k in source.keyframes}
  for b in range(4):
    n = counts[b]
    assert np.all(batch['boxes'][b, n:] == 0) and np.all(batch['labels'][b, n:] == 0)
    assert np.all((batch['boxes'][b, :n] >= 0) & (batch['boxes'][b, :n] <= 1))
    assert batch['labels'][b, :n].sum(1).max() >= 1  # The ground-truth boxes come first.
  it.close()


@pytest.mark.parametrize('videos,workers', [(False, 0), (True, 0),
                                            pytest.param(False, 2, marks=pytest.mark.slow)])  # Starts processes.
def test_train_iterator_resumes_exactly(synthetic_root, videos, workers):
  cfg = synthetic_config(synthetic_root, videos=videos, num_workers=workers)
  it = train_iterator(cfg)
  for _ in range(2):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]  # Crosses the epoch of 9 keyframes.
  it.close()
  resumed = train_iterator(cfg)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  resumed.close()


def test_eval_rows_by_hand():
  # Process 0 holds keyframes 0, 2, 4: two batches of 2 on every process.
  rows, shapes = ava.eval_rows(['a'] * 5, 2, 1, 2, by_video=False)
  assert rows.tolist() == [1, 3, -1, -1] and shapes.tolist() == [-1] * 4
  rows, _ = ava.eval_rows(['a'] * 5, 2, 0, 2, by_video=False)
  assert rows.tolist() == [0, 2, 4, -1]
  # By video, global batch 4: a's 3 keyframes + 1 pad, b's 5 + 3 pads; process 1 takes the second half of each.
  videos = ['a'] * 3 + ['b'] * 5
  rows, shapes = ava.eval_rows(videos, 2, 1, 2, by_video=True)
  assert rows.tolist() == [2, -1, 5, 6, -1, -1] and shapes.tolist() == [0, 0, 3, 3, 3, 3]
  rows, _ = ava.eval_rows(videos, 2, 0, 2, by_video=True)
  assert rows.tolist() == [0, 1, 3, 4, 7, -1]


@pytest.mark.parametrize('view', ['center', 'full'])
def test_eval_covers_every_keyframe_once_on_every_process(synthetic_root, view):
  """Two videos' val keyframes (one val video here: 3 keyframes) across 2 processes, batches of 2 per process."""
  cfg = synthetic_config(synthetic_root, ava_test_view=view)
  keyframes = ava.AvaSource(cfg, 'eval', 4).keyframes
  seen, num_batches = [], set()
  for p in range(2):
    batches = eval_batches(cfg, global_batch_size=4, process_index=p, process_count=2)
    num_batches.add(len(batches))
    for batch in batches:
      assert batch['video'].shape[2:4] == ((32, 32) if view == 'center' else (32, 42))  # 48x64 -> 32x42 (floor).
      assert set(batch) == {'video', 'boxes', 'box_mask', 'labels', 'keyframe_index', 'original_boxes', 'mask'}
      for b in np.flatnonzero(batch['mask']):
        index = int(batch['keyframe_index'][b])
        seen.append(index)
        n = min(len(keyframes[index].boxes), cfg.ava_max_boxes)
        assert batch['box_mask'][b].sum() == n
        np.testing.assert_allclose(batch['original_boxes'][b, :n], keyframes[index].boxes[:n])
        if view == 'full':
          np.testing.assert_allclose(batch['boxes'][b, :n], keyframes[index].boxes[:n])
      assert not batch['box_mask'][~batch['mask']].any()
  assert len(num_batches) == 1
  assert sorted(seen) == list(range(len(keyframes)))


def test_more_boxes_than_max_keep_the_first_and_are_counted(synthetic_root):
  cfg = synthetic_config(synthetic_root, ava_max_boxes=2)
  source = ava.AvaSource(cfg, 'eval', 4)
  assert source.dropped_boxes == sum(len(k.boxes) - 2 for k in source.keyframes) > 0
  batch = eval_batches(cfg)[0]
  np.testing.assert_allclose(batch['original_boxes'][0], source.keyframes[0].boxes[:2])
  assert batch['box_mask'].all()


def test_bad_frames_and_videos_are_skipped_and_counted(synthetic_root, tmp_path):
  import shutil
  from mvit_jax.data import pipeline
  root = str(tmp_path / 'ava')
  shutil.copytree(synthetic_root, root)
  # Frame 20 (second 902 of video001, in its clip) is garbage; video003 (val) is not a video.
  bad_frame = f'{root}/frames/video001/video001_000021.jpg'
  open(bad_frame, 'wb').write(b'not a jpeg')
  open(f'{root}/videos/video003.mp4', 'wb').write(b'not a video')
  before = pipeline.skip_stats().skipped
  cfg = synthetic_config(root, max_failure_fraction=0.5)
  it = train_iterator(cfg)
  for _ in range(3):  # One epoch: every keyframe once, the bad one replaced.
    batch = next(it)
    assert batch['video'].shape == (4, 4, 32, 32, 3)
  it.close()
  assert pipeline.skip_stats().skipped == before + 1
  assert f'{root}/frames/video001 at second 902' in pipeline.skip_stats().bad_videos
  # Eval from the videos: the bad video's keyframes are masked rows, counted.
  batches = eval_batches(synthetic_config(root, videos=True, max_failure_fraction=1.0))
  assert not any(batch['mask'].any() for batch in batches)
  assert pipeline.skip_stats().skipped == before + 4
  with pytest.raises(pipeline.TooManyBadVideosError):  # 3 of 3 keyframes bad: more than 0.5.
    eval_batches(synthetic_config(root, videos=True, max_failure_fraction=0.5))


@pytest.mark.parametrize('overrides, message', [
    (dict(ava_frame_dir='/f', ava_video_dir='/v'), r'config\.data\.ava_video_dir must be empty'),
    (dict(ava_test_view='left'), r"config\.data\.ava_test_view must be 'center' or 'full'"),
    (dict(ava_max_boxes=0), r'config\.data\.ava_max_boxes must be >= 1'),
    (dict(ava_detection_score_thresh=1.5), r'config\.data\.ava_detection_score_thresh must be in \[0, 1\]'),
    (dict(ava_fps=0.0), r'config\.data\.ava_fps must be > 0'),
    (dict(ava_valid_secs=(1798, 902)), r'config\.data\.ava_valid_secs must be'),
    (dict(random_resized_crop=True), r'config\.data\.random_resized_crop must be False'),
    (dict(num_repeated_samples=2), r'config\.data\.num_repeated_samples must be 1'),
    (dict(train_jitter_scales=(200, 320)), r'config\.data\.train_jitter_scales \(200, 320\) must not be smaller'),
])
def test_config_checks_name_the_key(overrides, message):
  from mvit_jax.train import config as train_config
  config = train_config.base_config()
  d = config.data
  d.dataset_kind, d.randaugment, d.mixup_prob, d.random_erasing_prob, d.label_smoothing = 'ava', False, 0.0, 0.0, 0.0
  d.random_resized_crop, d.num_repeated_samples = False, 1
  train_config.validate(config)
  d.update(overrides)
  with pytest.raises(train_config.ConfigError, match=message):
    train_config.validate(config)


def test_full_view_of_a_video_whose_first_frame_is_bad_masks_all_its_rows(synthetic_root, tmp_path):
  """Its frame size is unknown: every row of its batches is masked (crop x crop), none of another size."""
  import shutil
  root = str(tmp_path / 'ava')
  shutil.copytree(synthetic_root, root)
  open(f'{root}/frames/video003/video003_000001.jpg', 'wb').write(b'not a jpeg')
  batches = eval_batches(synthetic_config(root, ava_test_view='full', max_failure_fraction=1.0))
  assert all(batch['video'].shape[2:4] == (32, 32) and not batch['mask'].any() for batch in batches)
