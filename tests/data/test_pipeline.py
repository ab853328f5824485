"""grain loaders: contents, sharding, determinism, exact resume (0 and 2 workers), eval views, bad input."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mvit_jax.data import config as config_lib
from mvit_jax.data import pipeline
from mvit_jax.data import sampling
from mvit_jax.data import sources
from tests import testlib

NUM_VIDEOS, NUM_CLASSES, VIDEO_FRAMES = 6, 3, 40


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('pipeline')
  entries = []
  for v in range(NUM_VIDEOS):
    testlib.write_index_video(str(d / f'v{v}.mp4'), VIDEO_FRAMES, video_id=v, gop=8)
    entries.append((f'v{v}.mp4', v % NUM_CLASSES))
  testlib.write_manifest(str(d / 'train.csv'), entries)
  testlib.write_manifest(str(d / 'val.csv'), entries[:3])
  return d


def make_config(data_dir, **overrides):
  """Augmentations that keep the index stripes readable: full-height crops, no RandAugment or erasing."""
  cfg = config_lib.default_data_config()
  cfg.root, cfg.num_classes = str(data_dir), NUM_CLASSES
  cfg.train_manifest, cfg.eval_manifest = str(data_dir / 'train.csv'), str(data_dir / 'val.csv')
  cfg.num_frames, cfg.sampling_rate, cfg.target_fps = 4, 2, 30.0
  cfg.train_short_side = cfg.test_short_side = cfg.crop_size = testlib.HEIGHT
  cfg.random_resized_crop, cfg.train_jitter_scales = False, (testlib.HEIGHT, testlib.HEIGHT)
  cfg.randaugment, cfg.random_erasing_prob = False, 0.0
  cfg.num_workers, cfg.read_threads = 0, 1
  cfg.update(overrides)
  return cfg


def train_iterator(cfg, **kwargs):
  """make_train_iterator for process 0 of 1 (unless given), with the config's num_classes."""
  return pipeline.make_train_iterator(cfg, **{'num_classes': cfg.num_classes, 'process_index': 0,
                                               'process_count': 1, **kwargs})


def eval_iterator(cfg, **kwargs):
  """make_eval_iterator for process 0 of 1 (unless given), with the config's num_classes."""
  return pipeline.make_eval_iterator(cfg, **{'num_classes': cfg.num_classes, 'process_index': 0,
                                              'process_count': 1, **kwargs})


def take(it, n):
  return [next(it) for _ in range(n)]


def test_train_batches_hold_whole_clips_of_the_labelled_video(data_dir):
  cfg = make_config(data_dir)
  it = train_iterator(cfg, global_batch_size=4, seed=0)
  seen = set()
  for batch in take(it, 6):  # 6 batches x 2 videos = 2 epochs.
    assert set(batch) == {'video', 'label'}
    assert batch['video'].shape == (4, 4, testlib.HEIGHT, testlib.HEIGHT, 3) and batch['video'].dtype == np.uint8
    assert batch['label'].shape == (4,) and batch['label'].dtype == np.int32
    codes = testlib.read_codes(batch['video'].reshape(-1, testlib.HEIGHT, testlib.HEIGHT, 3)).reshape(4, 4)
    video_ids, frames = codes >> 8, codes & 255
    assert np.all(video_ids == video_ids[:, :1])                      # A clip comes from one video.
    np.testing.assert_array_equal(video_ids[:, 0] % NUM_CLASSES, batch['label'])
    np.testing.assert_array_equal(codes[0::2], codes[1::2])           # Repeated samples: same frames, adjacent.
    # linspace(s, s + 7, 4): steps of 7/3 frames -> truncated differences of 2 or 3, 7 in all.
    assert np.all(np.isin(np.diff(frames, axis=1), [2, 3])) and np.all(frames[:, -1] - frames[:, 0] == 7)
    assert np.all(frames[:, -1] < VIDEO_FRAMES)
    seen.update(video_ids[:, 0].tolist())
  assert seen == set(range(NUM_VIDEOS))
  it.close()


def test_shards_are_disjoint_and_each_epoch_is_reshuffled():
  shards = [pipeline.train_index_dataset(10, seed=3, process_index=p, process_count=3) for p in range(3)]
  firsts = [list(s) for s in shards]
  assert sorted(sum(firsts, [])) == list(range(10))
  assert firsts[1] and set(firsts[1]) == {1, 4, 7}
  repeated = shards[0].repeat(None)
  epochs = [[repeated[e * 4 + i] for i in range(4)] for e in range(4)]
  assert all(sorted(e) == [0, 3, 6, 9] for e in epochs)
  assert len({tuple(e) for e in epochs}) > 1  # A new order in some later epoch.
  again = pipeline.train_index_dataset(10, seed=3, process_index=0, process_count=3)
  assert list(again) == firsts[0]


def test_same_seed_same_batches_other_seed_other_batches(data_dir):
  cfg = make_config(data_dir, randaugment=True, random_erasing_prob=0.5)
  runs = []
  for seed in (7, 7, 8):
    it = train_iterator(cfg, global_batch_size=4, seed=seed)
    runs.append(take(it, 2))
    it.close()
  for a, b in zip(runs[0], runs[1]):
    np.testing.assert_array_equal(a['video'], b['video'])
  assert not np.array_equal(runs[0][0]['video'], runs[2][0]['video'])


def test_process_local_batch_and_divisibility_checks(data_dir):
  cfg = make_config(data_dir)
  it = train_iterator(cfg, global_batch_size=8, seed=0, process_index=1, process_count=2)
  batch = next(it)
  assert batch['video'].shape[0] == 4
  assert set((testlib.read_codes(batch['video'][:, 0]) >> 8).tolist()) <= {1, 3, 5}  # Process 1 of 2: odd videos.
  it.close()
  with pytest.raises(ValueError, match='divisible'):
    train_iterator(cfg, global_batch_size=6, seed=0, process_index=0, process_count=2)
  it = pipeline.make_train_iterator(cfg, num_classes=NUM_CLASSES, global_batch_size=4, seed=0)  # jax's process.
  assert next(it)['video'].shape[0] == 4
  it.close()


@pytest.mark.parametrize('num_workers', [0, pytest.param(2, marks=pytest.mark.slow)])
def test_restored_iterator_yields_the_uninterrupted_batches(data_dir, num_workers):
  cfg = make_config(data_dir, num_workers=num_workers, randaugment=True, random_erasing_prob=0.5)
  kwargs = dict(global_batch_size=4, seed=1)
  it = train_iterator(cfg, **kwargs)
  take(it, 2)
  state = json.loads(json.dumps(it.get_state()))  # What grain's orbax handler writes.
  expected = take(it, 3)                          # Crosses the epoch boundary (3 batches per epoch).
  it.close()
  resumed = train_iterator(cfg, **kwargs)
  resumed.set_state(state)
  for want, got in zip(expected, take(resumed, 3)):
    np.testing.assert_array_equal(want['video'], got['video'])
    np.testing.assert_array_equal(want['label'], got['label'])
  resumed.close()


@pytest.mark.slow
@pytest.mark.parametrize('num_workers', [1, 2])
def test_workers_recycle_batch_memory_but_never_under_a_held_batch(data_dir, num_workers):
  kwargs = dict(global_batch_size=8, seed=3)  # 345 KB of uint8 video: pooled.
  in_process = train_iterator(make_config(data_dir), **kwargs)
  reference = take(in_process, 16)
  in_process.close()
  it = train_iterator(make_config(data_dir, num_workers=num_workers), **kwargs)
  held = take(it, 4)  # Kept alive: their blocks must not be handed out again.
  blocks = set()
  for want in reference[4:]:
    batch = next(it)
    blocks.add(batch['video'].shm.name)
    np.testing.assert_array_equal(batch['video'], want['video'])
    del batch  # Dropped: its block goes back to the worker.
  for want, got in zip(reference, held):
    np.testing.assert_array_equal(got['video'], want['video'])
    np.testing.assert_array_equal(got['label'], want['label'])
    assert got['video'].shm.name not in blocks
  assert len(blocks) < 12  # Blocks were reused.
  it.close()


def test_eval_yields_every_view_in_order_with_padding(data_dir):
  cfg = make_config(data_dir, test_num_clips=2, test_num_crops=3)
  it = eval_iterator(cfg, global_batch_size=8)
  batches = list(it)
  assert len(batches) == 3  # 3 videos x 6 views = 18 rows -> 3 batches of 8, 6 padding rows.
  cat = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert cat['video'].shape == (24, 4, testlib.HEIGHT, testlib.HEIGHT, 3)
  np.testing.assert_array_equal(cat['mask'], [True] * 18 + [False] * 6)
  np.testing.assert_array_equal(cat['video_index'][:18], np.repeat([0, 1, 2], 6))
  np.testing.assert_array_equal(cat['view_index'][:18], np.tile(np.arange(6), 3))
  np.testing.assert_array_equal(cat['label'][:18], np.repeat([0, 1, 2], 6))
  assert not cat['video'][18:].any()
  # 40 frames, span 8, delta 32: clip 0 starts at 0, clip 1 at 32; linspace(s, s + 7, 4) truncated.
  codes = testlib.read_codes(cat['video'][:18].reshape(-1, testlib.HEIGHT, testlib.HEIGHT, 3)).reshape(18, 4)
  for row in range(18):
    clip_idx = cat['view_index'][row] // 3
    np.testing.assert_array_equal(codes[row] & 255, [[0, 2, 4, 7], [32, 34, 36, 39]][clip_idx])
    assert np.all(codes[row] >> 8 == cat['video_index'][row])
    np.testing.assert_array_equal(
        codes[row] & 255, sampling.test_clip_indices(VIDEO_FRAMES, 30.0, int(clip_idx), cfg))


@pytest.mark.slow
def test_eval_with_workers_matches_in_process(data_dir):
  results = []
  for num_workers in (0, 2):
    cfg = make_config(data_dir, test_num_clips=2, test_num_crops=1, num_workers=num_workers)
    it = eval_iterator(cfg, global_batch_size=4)
    results.append(list(it))
    it.close()
  assert len(results[0]) == len(results[1]) == 2  # 3 videos x 2 views = 6 rows -> 2 batches of 4.
  for want, got in zip(*results):
    for key in want:
      np.testing.assert_array_equal(want[key], got[key])


def test_eval_processes_get_equal_batch_counts(data_dir):
  cfg = make_config(data_dir, test_num_clips=1, test_num_crops=1)
  per_process = []
  for p in range(2):  # 3 videos on 2 processes: 2 and 1 videos, both padded to one batch of 4.
    batches = list(eval_iterator(cfg, global_batch_size=8, process_index=p, process_count=2))
    per_process.append(batches)
  assert [len(b) for b in per_process] == [1, 1]
  np.testing.assert_array_equal(per_process[0][0]['video_index'], [0, 2, -1, -1])
  np.testing.assert_array_equal(per_process[1][0]['mask'], [True, False, False, False])


def test_multi_label_gives_multi_hot(data_dir, tmp_path):
  manifest = tmp_path / 'ml.csv'
  manifest.write_text(f'{data_dir}/v0.mp4 0,2\n{data_dir}/v1.mp4 1\n')
  cfg = make_config(data_dir, multi_label=True, train_manifest=str(manifest), eval_manifest=str(manifest),
                    test_num_clips=1)
  batch = next(train_iterator(cfg, global_batch_size=4, seed=0))
  assert batch['label'].shape == (4, NUM_CLASSES) and batch['label'].dtype == np.float32
  batch = next(eval_iterator(cfg, global_batch_size=2))
  np.testing.assert_array_equal(batch['label'], [[1, 0, 1], [0, 1, 0]])


@pytest.fixture(scope='module')
def torture(tmp_path_factory):
  d = tmp_path_factory.mktemp('torture')
  good, bad = testlib.write_torture_set(str(d))
  paths = list(good.values()) + list(bad.values())
  manifest = testlib.write_manifest(str(d / 'all.csv'), [(p, i % 2) for i, p in enumerate(paths)])
  return manifest, good, bad


@pytest.mark.parametrize('num_workers', [0, pytest.param(2, marks=pytest.mark.slow)])
def test_torture_set_eval_masks_exactly_the_bad_videos(data_dir, torture, num_workers):
  manifest, good, bad = torture
  cfg = make_config(data_dir, eval_manifest=manifest, train_manifest=manifest, num_classes=2, test_num_clips=1,
                    test_num_crops=1, max_failure_fraction=1.0, num_workers=num_workers)
  before = dict(pipeline.skip_stats().bad_videos), pipeline.skip_stats().skipped
  batches = list(eval_iterator(cfg, global_batch_size=8))
  assert len(batches) == 1 and set(batches[0]) == {'video', 'label', 'video_index', 'view_index', 'mask'}
  assert batches[0]['video'].shape == (8, 4, testlib.HEIGHT, testlib.HEIGHT, 3)
  np.testing.assert_array_equal(batches[0]['mask'], [True] * len(good) + [False] * len(bad))
  np.testing.assert_array_equal(batches[0]['video_index'], np.arange(8))  # Failed videos keep their index.
  assert not batches[0]['video'][len(good):].any()
  # Counted in this (the main) process from the indices the batch carried, once per failed view.
  assert pipeline.skip_stats().skipped - before[1] == len(bad)
  for path in bad.values():
    assert pipeline.skip_stats().bad_videos[path] == before[0].get(path, 0) + 1


def test_torture_set_train_replaces_bad_videos(data_dir, torture):
  manifest, good, bad = torture
  cfg = make_config(data_dir, train_manifest=manifest, num_classes=2, max_failure_fraction=1.0)
  before = pipeline.skip_stats().skipped
  it = train_iterator(cfg, global_batch_size=4, seed=0)
  batches = take(it, 8)  # 16 videos drawn: two epochs of 8.
  it.close()
  for batch in batches:
    assert batch['video'].shape == (4, 4, testlib.HEIGHT, testlib.HEIGHT, 3)
    codes = testlib.read_codes(batch['video'].reshape(-1, testlib.HEIGHT, testlib.HEIGHT, 3)).reshape(4, 4)
    # Good videos (ids 0-2; vfr has id 0), or early clips of the index-in-front truncated one (id 3).
    assert set((codes >> 8).ravel().tolist()) <= {0, 1, 2, 3}
  # Every bad file is met in each epoch; the index-in-front truncated one fails only for late clips.
  unconditional = {bad[k] for k in ('zero', 'text', 'audio_only', 'truncated')}
  assert unconditional <= set(pipeline.skip_stats().bad_videos)
  assert pipeline.skip_stats().skipped - before >= 2 * len(unconditional)


@pytest.mark.slow
def test_workers_report_the_failures_the_main_process_sees_in_process(data_dir, torture):
  manifest, _, bad = torture
  counts = []
  for num_workers in (0, 2):
    cfg = make_config(data_dir, train_manifest=manifest, num_classes=2, max_failure_fraction=1.0,
                      num_workers=num_workers)
    before = dict(pipeline.skip_stats().bad_videos)
    it = train_iterator(cfg, global_batch_size=4, seed=5)
    take(it, 6)
    it.close()
    counts.append({p: n - before.get(p, 0) for p, n in pipeline.skip_stats().bad_videos.items()
                   if n > before.get(p, 0)})
  assert counts[0] == counts[1] and set(counts[0]) <= set(bad.values()) and sum(counts[0].values()) >= 4


def test_too_many_bad_videos_stops_with_clear_message(data_dir, torture):
  manifest, _, _ = torture
  cfg = make_config(data_dir, train_manifest=manifest, num_classes=2)  # Default max_failure_fraction 1%.
  it = train_iterator(cfg, global_batch_size=4, seed=0)
  with pytest.raises(pipeline.TooManyBadVideosError, match=r'of 8 videos failed to decode.*max_failure_fraction'):
    take(it, 4)
  it.close()


def test_each_bad_video_is_logged_once_with_its_reason(data_dir, tmp_path, caplog):
  bad = [tmp_path / 'empty.mp4', tmp_path / 'text.mp4']
  bad[0].write_bytes(b'')
  bad[1].write_text('not a video')
  manifest = testlib.write_manifest(str(tmp_path / 'm.csv'), [(data_dir / 'v0.mp4', 0), (data_dir / 'v1.mp4', 1),
                                                         (bad[0], 0), (bad[1], 1)])
  cfg = make_config(data_dir, train_manifest=manifest, num_classes=2, max_failure_fraction=1.0)
  it = train_iterator(cfg, global_batch_size=4, seed=0)
  with caplog.at_level('WARNING'):
    take(it, 6)  # 12 videos drawn: three epochs of 4, each meeting both bad files.
  it.close()
  messages = [r.getMessage() for r in caplog.records]
  # The decoding process says why (once per path); the main process counts the path and names it once.
  reasons = [m for m in messages if m.startswith('Cannot decode video')]
  assert len(reasons) == 2
  assert f'Cannot decode video {bad[0]}: empty file (0 bytes)' in reasons
  assert any(m.startswith(f'Cannot decode video {bad[1]}: cannot open') for m in reasons)
  assert sorted(m for m in messages if m.startswith('Skipping bad video')) == sorted(
      f'Skipping bad video {path}' for path in bad)
  assert pipeline.skip_stats().bad_videos[str(bad[0])] >= 3  # Met in each of the three epochs.


def test_each_manifest_is_parsed_once_per_version(data_dir, tmp_path, monkeypatch):
  train_csv, val_csv = str(tmp_path / 'train.csv'), str(tmp_path / 'val.csv')
  shutil.copy(data_dir / 'train.csv', train_csv)
  shutil.copy(data_dir / 'val.csv', val_csv)
  parsed, parse = [], sources._parse_manifest  # pylint: disable=protected-access
  monkeypatch.setattr(sources, '_parse_manifest', lambda path, *args: parsed.append(path) or parse(path, *args))
  cfg = make_config(data_dir, num_classes=0, train_manifest=train_csv, eval_manifest=val_csv, test_num_clips=1)
  num_classes = sources.num_classes_from_config(cfg)  # What the trainer resolves once, from the train manifest.
  assert num_classes == NUM_CLASSES
  it = train_iterator(cfg, num_classes=num_classes, global_batch_size=4, seed=0)
  next(it)
  it.close()
  for _ in range(2):  # Two evaluations.
    assert len(list(eval_iterator(cfg, num_classes=num_classes, global_batch_size=4))) == 1
  assert parsed == [train_csv, val_csv]
  with open(val_csv, 'a') as f:  # A rewritten manifest is read again.
    f.write('v3.mp4 0\n')
  assert len(list(eval_iterator(cfg, num_classes=num_classes, global_batch_size=4))) == 1
  assert parsed == [train_csv, val_csv, val_csv]


@pytest.mark.slow
def test_a_closed_loader_leaves_no_shared_memory_behind(data_dir):
  """Workers read ahead into pooled blocks that never reach the main process; closing unlinks every block, so the
  process ends without multiprocessing's 'leaked shared_memory objects' warning."""
  program = ('import pathlib, sys\nfrom tests.data import test_pipeline as t\n'
             'cfg = t.make_config(pathlib.Path(sys.argv[1]), num_workers=2, read_threads=2)\n'
             'it = t.train_iterator(cfg, global_batch_size=8, seed=0)\n'
             'held = t.take(it, 3)\nit.close()\nprint(len(held))\n')
  result = subprocess.run([sys.executable, '-c', program, str(data_dir)], cwd=testlib.REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['3']
  assert 'leaked' not in result.stderr, result.stderr
