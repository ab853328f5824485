"""grain loaders for training and evaluation: shuffle, shard, decode + augment in workers, batch, prefetch.

Train: source indices of this process -> seeded global shuffle (new order every epoch) -> repeat forever ->
random_map(decode a random clip, `num_repeated_samples` augmentations) -> batch -> flatten the copies -> workers.
Eval: every (video, view) pair of this process in order, padded with masked rows to the same number of full
batches on every process.
Video files in a bucket (`fetches_ahead`): the read threads only fetch each batch's files, and the decode and
augmentation run after them, in the worker; a training element carries a copy of its random generator there, so
the batches are the same.

Videos leave the loaders as uint8 clips; normalisation and random erasing run on the accelerator
(`device_preprocess.preprocess_on_device`, in the train and eval steps).

Bad input: a video that fails to decode is replaced (train) by another video drawn from the element's own seeded
RNG, so the replacement is the same on every run; in eval its rows are masked out. The process that decodes logs
the decode error (once per path and process); each batch carries the source indices of the videos that failed
(int32, padded with -1), from which the main process logs each bad path once, counts it in `skip_stats()` and
raises TooManyBadVideosError when more than `max_failure_fraction` of this process's videos are bad.
"""
from collections.abc import Callable
import copy
import dataclasses
import math
import threading
from typing import Any

from absl import flags
from absl import logging
import grain
import numpy as np

from mvit_jax.system import host_malloc
from mvit_jax.system import process_lifetime
from mvit_jax.data import decode
from mvit_jax.data import sampling
from mvit_jax.data import shm_batch
from mvit_jax.data import sources
from mvit_jax.data import transforms

# int32 (..., N) source indices of the videos that failed to decode for this row, padded with -1; removed by the
# main process before a batch leaves the loader.
_FAILED = '_failed_videos'
_NOT_FAILED = -1


class TooManyBadVideosError(RuntimeError):
  """More videos failed to decode than data_config.max_failure_fraction allows."""


@dataclasses.dataclass
class SkipStats:
  """Counts of this process's loaders (train and eval together), for logging by the trainer.

  examples: clips delivered (padding rows excluded); skipped: failed decode attempts (each replaced or masked);
  bad_videos: path -> failed decode attempts, for every distinct video that failed, in the order first seen.
  """
  examples: int = 0
  skipped: int = 0
  bad_videos: dict[str, int] = dataclasses.field(default_factory=dict)


_STATS = SkipStats()
_STATS_LOCK = threading.Lock()
_LOGGED_DECODE_ERRORS: set[str] = set()  # Paths whose decode error this process (worker or main) has logged.


def skip_stats() -> SkipStats:
  """This process's running SkipStats (the live object; read it, do not modify it)."""
  return _STATS


def _process_info(process_index, process_count):
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  return process_index, process_count


def _log_decode_error(path: str, error: decode.DecodeError) -> None:
  """Logs why `path` failed, once per process: the reason is known only where the decode ran."""
  if path not in _LOGGED_DECODE_ERRORS:
    _LOGGED_DECODE_ERRORS.add(path)
    logging.warning('Cannot decode video %s: %s', path, error)


def _label_array(label, num_classes: int, multi_label: bool) -> np.ndarray:
  """int32 () class index, or float32 (C,) multi-hot when multi_label."""
  if not multi_label:
    return np.int32(label)
  hot = np.zeros(num_classes, np.float32)
  hot[list(np.atleast_1d(label))] = 1.0
  return hot


def load_or_replace(source, index: int, rng: np.random.Generator, max_attempts: int, load: Callable,
                    what: str = 'videos') -> tuple[Any, int, np.ndarray]:
  """(load(i), i, failed): `index` loaded, or after a DecodeError (logged) another index drawn from `rng`, at most
  max_attempts times; failed int32 (max_attempts,) holds the indices that failed (_NOT_FAILED elsewhere), for the
  main process to count. One more failure raises TooManyBadVideosError."""
  failed = np.full(max_attempts, _NOT_FAILED, np.int32)
  for attempt in range(max_attempts + 1):
    try:
      return load(index), index, failed
    except decode.DecodeError as e:
      _log_decode_error(source.describe(index), e)
      if attempt == max_attempts:
        raise TooManyBadVideosError(f'{attempt + 1} {what} in a row failed to decode; last: '
                                    f'{source.describe(index)}: {e}') from None
      failed[attempt] = index
      index = int(rng.integers(len(source)))


def fetches_ahead(source) -> bool:
  """Whether loaders read the source's files ahead (source.fetch) in their read threads and decode in the worker,
  one clip at a time: for video files in a bucket, where a file takes tens of ms to arrive. Decoding in the read
  threads instead, clips decoding side by side cost more CPU each and wait for their files one by one
  (docs/performance.md, "From a bucket")."""
  return getattr(source, 'remote', False) and getattr(source, 'fetch', None) is not None


def _load(source, index: int, index_fn, short_side: int, fetched=None) -> decode.Clip:
  """source.load, given what source.fetch read ahead for `index` where there is any."""
  if fetched is None:
    return source.load(index, index_fn, short_side)
  return source.load(index, index_fn, short_side, fetched)


def _train_example(source, cfg, num_classes: int, index: int, rng: np.random.Generator, fetched=None) -> dict:
  """Source index -> {'video': uint8 (R, T, crop, crop, 3), 'label', _FAILED: int32 (max_replacement_attempts,)}.

  `fetched`: what source.fetch read ahead for `index`. At most max_replacement_attempts videos fail before one
  decodes; one more failure raises.
  """
  first = int(index)

  def index_fn(num_video_frames, fps):
    return sampling.train_clip_indices(num_video_frames, fps, cfg, rng)

  def load(i):  # A replacement is read here, not ahead.
    return _load(source, i, index_fn, cfg.train_short_side, fetched if i == first else None)

  clip, index, failed = load_or_replace(source, first, rng, cfg.max_replacement_attempts, load)
  copies = [transforms.train_transform(clip.frames, rng, cfg) for _ in range(cfg.num_repeated_samples)]
  video = copies[0][None] if len(copies) == 1 else np.stack(copies)  # (R, T, H, W, 3); no copy when R = 1.
  return {'video': video, 'label': _label_array(source.label(index), num_classes, cfg.multi_label), _FAILED: failed}


class _TrainExample(grain.transforms.RandomMap):
  """Source index -> _train_example."""

  def __init__(self, source, cfg, num_classes: int):
    self.source, self.cfg, self.num_classes = source, cfg, num_classes

  def random_map(self, index, rng: np.random.Generator):
    return _train_example(self.source, self.cfg, self.num_classes, index, rng)


class _DrawGenerator(grain.transforms.RandomMap):
  """Source index -> (index, a copy of the generator grain gives this element): decoded later, the clip gets the
  draws _TrainExample would have given it (grain reuses its generators)."""

  def random_map(self, index, rng: np.random.Generator):
    return int(index), copy.deepcopy(rng)


class _FetchBatch(grain.transforms.Map):
  """[(index, rng)] -> [(index, rng, fetched)]: one batch's files read ahead, all at once (source.fetch)."""

  def __init__(self, source):
    self.source = source

  def map(self, draws):
    return [draw + (fetched,) for draw, fetched in zip(draws, self.source.fetch([index for index, _ in draws]))]


class _DecodeBatch(grain.transforms.Map):
  """[(index, rng, fetched)] -> a batch of _train_example's, repeats flattened."""

  def __init__(self, source, cfg, num_classes: int):
    self.source, self.cfg, self.num_classes = source, cfg, num_classes

  def map(self, fetched_draws):
    return _flatten_repeats(shm_batch.stack([_train_example(self.source, self.cfg, self.num_classes, *draw)
                                             for draw in fetched_draws]))


def _flatten_repeats(batch):
  """(Bv, R, ...) videos -> (Bv*R, ...), labels repeated to match; copies of one video stay adjacent."""
  repeats = batch['video'].shape[1]
  return {'video': batch['video'].reshape((-1,) + batch['video'].shape[2:]),
          'label': np.repeat(batch['label'], repeats, axis=0), _FAILED: batch[_FAILED]}


class _EvalExample(grain.transforms.Map):
  """Row index -> one view {'video', 'label', 'video_index', 'view_index', 'mask', _FAILED: int32 (1,)}."""

  def __init__(self, source, cfg, num_classes: int, video_indices: list[int]):
    self.source, self.cfg, self.num_classes = source, cfg, num_classes
    self.video_indices = video_indices
    self.num_views = cfg.test_num_clips * cfg.test_num_crops
    self._last = None  # (video, clip) -> frames: views of one clip differ only in the spatial crop.

  def __getstate__(self):
    return {**self.__dict__, '_last': None}

  def _masked_row(self, video_index: int = -1, view_index: int = -1, failed: int = _NOT_FAILED):
    cfg = self.cfg
    return {'video': np.zeros((cfg.num_frames, cfg.crop_size, cfg.crop_size, 3), np.uint8),
            'label': _label_array(0 if not cfg.multi_label else [], self.num_classes, cfg.multi_label),
            'video_index': np.int32(video_index), 'view_index': np.int32(view_index), 'mask': np.bool_(False),
            _FAILED: np.array([failed], np.int32)}

  def video_of(self, row) -> int | None:
    """The source index of the row's video; None for a padding row."""
    video_pos = int(row) // self.num_views
    return self.video_indices[video_pos] if video_pos < len(self.video_indices) else None

  def map(self, row, fetched=None):
    """`fetched`: what source.fetch read ahead for the row's video."""
    cfg = self.cfg
    index, view = self.video_of(row), int(row) % self.num_views
    if index is None:
      return self._masked_row()
    clip_idx, crop_idx = sampling.test_view(view, cfg.test_num_crops)
    last = self._last
    if last is not None and last[0] == (index, clip_idx):
      frames = last[1]
    else:
      try:
        frames = _load(self.source, index, lambda n, fps: sampling.test_clip_indices(n, fps, clip_idx, cfg),
                       transforms.eval_short_side(cfg), fetched).frames
      except decode.DecodeError as e:
        _log_decode_error(self.source.describe(index), e)
        return self._masked_row(index, view, failed=index)
      self._last = ((index, clip_idx), frames)
    return {'video': transforms.eval_transform(frames, crop_idx, cfg.test_num_crops, cfg),
            'label': _label_array(self.source.label(index), self.num_classes, cfg.multi_label),
            'video_index': np.int32(index), 'view_index': np.int32(view), 'mask': np.bool_(True),
            _FAILED: np.array([_NOT_FAILED], np.int32)}


class _FetchEvalBatch(grain.transforms.Map):
  """[row] -> [(row, fetched)]: the videos of one batch's rows read ahead, each once (all its views share it), all
  at once (source.fetch)."""

  def __init__(self, source, example: _EvalExample):
    self.source, self.example = source, example

  def map(self, rows):
    videos = [self.example.video_of(row) for row in rows]
    distinct = list(dict.fromkeys(index for index in videos if index is not None))
    fetched = dict(zip(distinct, self.source.fetch(distinct)))
    return [(row, fetched.get(index)) for row, index in zip(rows, videos)]


class _DecodeEvalBatch(grain.transforms.Map):
  """[(row, fetched)] -> a batch of _EvalExample rows."""

  def __init__(self, example: _EvalExample):
    self.example = example

  def map(self, fetched_rows):
    return shm_batch.stack([self.example.map(row, fetched) for row, fetched in fetched_rows])


class _AccountFailures(grain.transforms.Map):
  """Main process: maps the batch's failed source indices to paths, logs each new one once, counts them,
  enforces max_failure_fraction and drops the _FAILED field."""

  def __init__(self, source, num_videos: int, max_failure_fraction: float):
    self.source, self.num_videos, self.max_failure_fraction = source, num_videos, max_failure_fraction
    self.bad_videos = {}  # This iterator's bad paths, first seen first (the threshold is per loader).

  def map(self, batch):
    batch = dict(batch)
    failed = np.asarray(batch.pop(_FAILED)).ravel()
    paths = [self.source.describe(index) for index in failed[failed != _NOT_FAILED].tolist()]
    with _STATS_LOCK:
      _STATS.examples += int(batch['mask'].sum()) if 'mask' in batch else len(batch['video'])
      _STATS.skipped += len(paths)
      for path in paths:
        if path not in _STATS.bad_videos:
          logging.warning('Skipping bad video %s', path)
        _STATS.bad_videos[path] = _STATS.bad_videos.get(path, 0) + 1
        self.bad_videos[path] = self.bad_videos.get(path, 0) + 1
    if len(self.bad_videos) > self.max_failure_fraction * self.num_videos:
      listing = '\n'.join(f'  {path}' for path in list(self.bad_videos)[:10])
      raise TooManyBadVideosError(
          f'{len(self.bad_videos)} of {self.num_videos} videos failed to decode, more than max_failure_fraction='
          f'{self.max_failure_fraction} allows (the log says why each failed: "Cannot decode video ..."). Check the'
          f' data with `python -m mvit_jax.data.scan --manifest ...`. First failures:\n{listing}')
    return batch


def _init_worker(worker_index: int, worker_count: int) -> None:
  """Ends the worker with the main process (also when that is killed: its blocks are unlinked), and spares it the
  page faults of fresh memory: for its heap and for the batches it hands over.

  Every decoded frame (~260 KB) and batch (~40 MB) is larger than glibc's mmap threshold, so by default each one
  is a fresh mmap whose pages fault in on first touch, several ms of CPU per clip (docs/performance.md); the
  thresholds keep freed buffers in the heap (a no-op without glibc).
  Batches go to the main process through shared memory that shm_batch recycles (or populates ahead).
  """
  del worker_index, worker_count
  process_lifetime.exit_with_parent(on_exit=shm_batch.unlink_all)
  host_malloc.keep_large_blocks_in_heap()
  shm_batch.enable_in_this_process()


def read_thread_count(cfg, source) -> int:
  """Threads per process that read ahead: cfg.read_threads, and for a source in a bucket one per prefetched batch
  (read_prefetch), as each batch's files then take tens of ms to arrive."""
  return max(cfg.read_threads, cfg.read_prefetch) if source.remote else cfg.read_threads


def _finish(ds: grain.MapDataset, cfg, source, num_videos: int, then: grain.transforms.Map | None = None):
  """MapDataset of batches (or of what `then` maps to batches, after the read threads) -> prefetching IterDataset
  with failure accounting in the main process."""
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_thread_count(cfg, source),
                                               prefetch_buffer_size=cfg.read_prefetch))
  if then is not None:
    it_ds = it_ds.map(then)
  if cfg.num_workers > 0:
    if not flags.FLAGS.is_parsed():
      # mp_prefetch reads grain's absl flags (grain_enable_multiprocess_worker_profiling), which raises
      # UnparsedFlagAccessError outside absl.app.run (tests, notebooks): there, use the flags' defaults.
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers,
                                                           per_worker_buffer_size=cfg.worker_buffer_size),
                              worker_init_fn=_init_worker).map(shm_batch.recycle_when_dropped)
    # Labels, masks and failed indices (bytes each) go through grain's pipe, not a shared-memory block apiece
    # (grain applies dataset options to the whole pipeline, its workers included).
    it_ds = grain.experimental.WithOptionsIterDataset(it_ds, grain.experimental.DatasetOptions(
        min_shm_size=shm_batch.MIN_POOLED_BYTES))
  return it_ds.map(_AccountFailures(source, num_videos, cfg.max_failure_fraction))


def _local_batch_size(global_batch_size: int, process_count: int, multiple: int = 1) -> int:
  if global_batch_size % (process_count * multiple):
    raise ValueError(f'global_batch_size {global_batch_size} must be divisible by process_count {process_count}'
                     + (f' x num_repeated_samples {multiple}' if multiple > 1 else ''))
  return global_batch_size // process_count


def make_train_iterator(data_config, *, num_classes: int, global_batch_size: int, seed: int,
                        process_index: int | None = None, process_count: int | None = None) -> grain.DatasetIterator:
  """Infinite iterator of {'video': uint8 (B, T, crop, crop, 3), 'label': int32 (B,) | float32 (B, C)}.

  The videos are augmented, cropped and flipped, not normalised or erased: the train step passes them through
  `device_preprocess.preprocess_on_device(..., train=True)`. `num_classes`: sources.num_classes_from_config's
  answer, resolved once by the caller.

  B = global_batch_size // process_count clips; each decoded video gives num_repeated_samples adjacent clips.
  Each process reads a disjoint 1/process_count of the videos; the order is reshuffled every epoch from `seed`.
  Supports get_state()/set_state() (grain.checkpoint.CheckpointSave/Restore).
  """
  cfg = data_config
  process_index, process_count = _process_info(process_index, process_count)
  local_batch = _local_batch_size(global_batch_size, process_count, cfg.num_repeated_samples)
  source = sources.make_source(cfg, 'train', num_classes)
  ds = train_index_dataset(len(source), seed=seed, process_index=process_index, process_count=process_count)
  num_local = len(ds)
  videos_per_batch = local_batch // cfg.num_repeated_samples
  if fetches_ahead(source):
    ds = (ds.repeat(None).random_map(_DrawGenerator())
          .batch(videos_per_batch, drop_remainder=True, batch_fn=list).map(_FetchBatch(source)))
    return iter(_finish(ds, cfg, source, num_local, then=_DecodeBatch(source, cfg, num_classes)))
  ds = (ds.repeat(None)
        .random_map(_TrainExample(source, cfg, num_classes))
        .batch(videos_per_batch, drop_remainder=True, batch_fn=shm_batch.stack)
        .map(_flatten_repeats))
  return iter(_finish(ds, cfg, source, num_local))


def train_index_dataset(num_videos: int, *, seed: int, process_index: int, process_count: int) -> grain.MapDataset:
  """One epoch of this process's source indices, shuffled by `seed`; after .repeat() each epoch reshuffles."""
  ds = grain.MapDataset.range(num_videos)[process_index::process_count]
  if len(ds) == 0:
    raise ValueError(f'process {process_index} of {process_count} has no training videos ({num_videos} in all)')
  return ds.seed(seed).shuffle()


def num_eval_batches(num_videos: int, data_config, *, global_batch_size: int, process_count: int = 1) -> int:
  """Batches every process yields in eval: enough for the process holding the most videos."""
  views = data_config.test_num_clips * data_config.test_num_crops
  max_local_videos = math.ceil(num_videos / process_count)
  return math.ceil(max_local_videos * views / _local_batch_size(global_batch_size, process_count))


def make_eval_iterator(data_config, *, num_classes: int, global_batch_size: int, process_index: int | None = None,
                       process_count: int | None = None) -> grain.DatasetIterator:
  """Finite iterator over every view (test_num_clips x test_num_crops) of this process's share of the videos.

  Yields {'video': uint8 (B, T, crop, crop, 3) (the eval step calls
  `device_preprocess.preprocess_on_device(..., train=False)`), 'label', 'video_index': int32 (B,) (index in the
  manifest), 'view_index': int32 (B,) (clip * test_num_crops + crop), 'mask': bool (B,)}. Views of a video are
  adjacent; rows that are padding or whose video failed to decode have mask False. Every process yields the same
  number of batches (num_eval_batches). Close the iterator when done: it owns worker processes.
  """
  cfg = data_config
  process_index, process_count = _process_info(process_index, process_count)
  local_batch = _local_batch_size(global_batch_size, process_count)
  if cfg.test_num_crops not in (1, 3):
    raise ValueError(f'test_num_crops must be 1 or 3, got {cfg.test_num_crops}')
  source = sources.make_source(cfg, 'eval', num_classes)
  video_indices = list(range(len(source)))[process_index::process_count]
  num_batches = num_eval_batches(len(source), cfg, global_batch_size=global_batch_size, process_count=process_count)
  example = _EvalExample(source, cfg, num_classes, video_indices)
  rows = grain.MapDataset.range(num_batches * local_batch)
  if fetches_ahead(source):
    ds = rows.batch(local_batch, batch_fn=list).map(_FetchEvalBatch(source, example))
    return iter(_finish(ds, cfg, source, max(1, len(video_indices)), then=_DecodeEvalBatch(example)))
  ds = rows.map(example).batch(local_batch, batch_fn=shm_batch.stack)
  return iter(_finish(ds, cfg, source, max(1, len(video_indices))))
