"""DMVR / Scenic video data as it is: TFRecord files of tf.train.SequenceExample, one JPEG per frame.

A record is a video: the feature list `image_key` (DMVR's 'image/encoded') holds its frames, one JPEG-encoded
frame per feature, at `fps` (data.frames_fps); the context int64 feature `label_key` ('clip/label/index') its
class index, or indices.

Random access (what grain's global shuffle, multi-host sharding and exact resume need): TFRecords are sequential,
so the source indexes them when it is made. One sequential pass over every file the glob matches (16 files at a
time, each read in 8 MiB blocks: one request per block on gs://) finds each record's (file, byte offset, length),
checks its crc and keeps its labels and frame count; grain then shuffles, shards and resumes on record numbers
exactly as it does on manifest rows, and `load` reads one record with one ranged read and decodes only the JPEGs
the clip uses. The pass reads the whole data set, on every host, once per process (the index is kept for the life
of the process, per file list and keys: the train source, the eval source of every evaluation and num_classes
share it). It costs ~1 s of one core per GB (crc + protobuf parse, 0.8-1.0 GB/s measured on page-cached files),
or the storage's read time when that is longer: Kinetics-400 train at short side 256 (~60 M frames of ~15 KB,
~0.9 TB) takes ~15 min of CPU, ~1 h where the reads run at 250 MB/s.

A bad record (crc, truncated, unparseable, no frames or label) is a bad video: `load` raises decode.DecodeError,
and the pipeline skips and counts it. A file whose framing breaks (a corrupt or cut record header, a read error)
keeps the records before the break, with a warning.
"""
import concurrent.futures
import contextlib
import functools

from absl import logging
import numpy as np

from mvit_jax.data import decode
from mvit_jax.data import tf_example
from mvit_jax.data import tfrecord
from mvit_jax.system import storage
from mvit_jax.system.errors import InputError


# Files indexed at once: their reads overlap (a bucket's request latency above all); crc and parse run at GB/s.
_INDEX_THREADS = 16


class DmvrError(InputError):
  """TFRecords that cannot be used as a data set; the message names the glob or file."""


def list_files(pattern: str) -> list[str]:
  """Sorted files (local or gs://) matching `pattern`, a path whose last component may hold wildcards."""
  return storage.glob(storage.parent(pattern), storage.name(pattern))


def _parse(data: bytes, image_key: str, label_key: str):
  """(JPEG frame features, labels tuple) of a serialized SequenceExample; raises tfrecord.RecordError."""
  try:
    example = tf_example.SequenceExample.FromString(data)
  except Exception as e:  # pylint: disable=broad-except  (protobuf's DecodeError and its kin)
    raise tfrecord.RecordError(f'not a SequenceExample: {e}') from None
  frames = example.feature_lists.feature_list[image_key].feature
  if not frames:
    raise tfrecord.RecordError(f'no frames in feature list {image_key!r}')
  labels = tuple(example.context.feature[label_key].int64_list.value)
  if not labels:
    raise tfrecord.RecordError(f'no label in context feature {label_key!r}')
  return frames, labels


def _index_file(path: str, image_key: str, label_key: str) -> list[tuple[int, int, int, tuple[int, ...]]]:
  """(offset, data length, frames, labels) of each record of one file; frames 0 and no labels for a bad one."""
  entries = []
  try:
    for record in tfrecord.scan(path):
      frames, labels = 0, ()
      if record.data is not None:
        with contextlib.suppress(tfrecord.RecordError):  # A bad record: `load` raises the reason.
          frame_list, labels = _parse(record.data, image_key, label_key)
          frames = len(frame_list)
      entries.append((record.offset, record.length, frames, labels))
  except Exception as e:  # pylint: disable=broad-except  (FramingError, OSError, a store's error)
    reason = str(e) if isinstance(e, tfrecord.FramingError) else storage.describe_error(e)
    logging.warning('DMVR file %s: %s; its %d records before that are used, the rest of the file is not',
                    path, reason, len(entries))
  return entries


@functools.lru_cache(maxsize=4)
def _build_index(files: tuple[str, ...], image_key: str, label_key: str):
  """(file ids int32 (N,), offsets int64 (N,), lengths int64 (N,), frames int32 (N,) (0: bad record), label
  starts int64 (N + 1,), labels int64 (L,)) of every record of `files`, in file and record order."""
  columns = [[], [], [], [], [0], []]
  with concurrent.futures.ThreadPoolExecutor(min(_INDEX_THREADS, len(files))) as pool:
    per_file = list(pool.map(lambda path: _index_file(path, image_key, label_key), files))
  for file_id, entries in enumerate(per_file):
    for offset, length, frames, labels in entries:
      for column, value in zip(columns, (file_id, offset, length, frames)):
        column.append(value)
      columns[5].extend(labels)
      columns[4].append(len(columns[5]))
  dtypes = (np.int32, np.int64, np.int64, np.int32, np.int64, np.int64)
  return tuple(np.asarray(column, dtype) for column, dtype in zip(columns, dtypes))


class DmvrSource:
  """The records of the TFRecord files matching `pattern` (local or gs://), in sorted file order, as videos.

  `num_frames`: int32 (N,) frames of each record from the index (0 for a bad record).
  """

  def __init__(self, pattern: str, *, fps: float, image_key: str = 'image/encoded',
               label_key: str = 'clip/label/index', multi_label: bool = False):
    self.fps, self.image_key, self.label_key = fps, image_key, label_key
    self.multi_label = multi_label
    self.remote = storage.is_url(pattern)
    self.files = tuple(list_files(pattern))
    if not self.files:
      raise DmvrError(f'no TFRecord files match {pattern!r}')
    (self._file_ids, self._offsets, self._lengths, self.num_frames, self._label_starts,
     self._labels) = _build_index(self.files, image_key, label_key)
    if not len(self._offsets):
      raise DmvrError(f'no records in the {len(self.files)} files matching {pattern!r} (see the warnings above)')
    if not multi_label:
      counts = np.diff(self._label_starts)
      if (counts > 1).any():
        i = int(np.argmax(counts > 1))
        raise DmvrError(f'{self.describe(i)} has {counts[i]} labels in {label_key!r}: set data.multi_label')
    if len(self._labels) and self._labels.min() < 0:
      raise DmvrError(f'{self._record_of_label(int(self._labels.argmin()))}: label {self._labels.min()} < 0')

  def _record_of_label(self, j: int) -> str:
    """describe() of the record holding the j-th entry of the labels column."""
    return self.describe(int(np.searchsorted(self._label_starts, j, side='right')) - 1)

  def __len__(self) -> int:
    return len(self._offsets)

  def label(self, i: int):
    """The class index (or, multi-label, the tuple of indices) from the index; () for a bad record."""
    labels = self._labels[self._label_starts[i]:self._label_starts[i + 1]]
    if self.multi_label:
      return tuple(labels.tolist())
    return int(labels[0]) if len(labels) else ()

  def check_labels(self, num_classes: int) -> None:
    """Raises DmvrError naming the record when a label lies outside [0, num_classes)."""
    if len(self._labels) and self._labels.max() >= num_classes:
      raise DmvrError(f'{self._record_of_label(int(self._labels.argmax()))}: label {self._labels.max()} outside '
                      f'[0, {num_classes})')

  def num_classes(self) -> int:
    """1 + the largest class index of any record (0 when no record has one)."""
    return 1 + int(self._labels.max()) if len(self._labels) else 0

  def describe(self, i: int) -> str:
    return f'{self.files[self._file_ids[i]]}@{self._offsets[i]}'

  def load(self, i: int, index_fn: decode.IndexFn, short_side: int = 0) -> decode.Clip:
    """The frames `index_fn(num_frames, fps)` asks for, (N, H, W, 3) uint8; raises decode.DecodeError."""
    try:
      data = tfrecord.read(self.files[self._file_ids[i]], int(self._offsets[i]), int(self._lengths[i]))
      frames, _ = _parse(data, self.image_key, self.label_key)
    except tfrecord.RecordError as e:
      raise decode.DecodeError(str(e)) from None
    except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
      raise decode.DecodeError(f'cannot read: {storage.describe_error(e)}') from None
    indices = np.asarray(index_fn(len(frames), self.fps), np.int64)
    cache = {}
    for j in np.unique(indices).tolist():
      try:
        cache[j] = decode.decode_image(frames[j].bytes_list.value[0], short_side)
      except Exception as e:  # pylint: disable=broad-except  (OpenCV's and Pillow's errors, a feature without bytes)
        raise decode.DecodeError(f'cannot decode frame {j}: {type(e).__name__}: {e}') from None
    return decode.Clip(np.stack([cache[j] for j in indices.tolist()]), indices, self.fps, len(frames), len(cache))


def source_from_config(cfg, split: str, num_classes: int = 0) -> DmvrSource:
  """The DmvrSource of `split` ('train' or 'eval': data.train_shards or data.eval_shards), its labels checked
  against `num_classes` when given."""
  pattern = cfg.train_shards if split == 'train' else cfg.eval_shards
  if not pattern:
    raise DmvrError(f'data config has no {split}_shards')
  source = DmvrSource(pattern, fps=cfg.frames_fps, image_key=cfg.dmvr_image_key, label_key=cfg.dmvr_label_key,
                      multi_label=cfg.multi_label)
  if num_classes:
    source.check_labels(num_classes)
  return source


def num_classes_from_config(cfg) -> int:
  """1 + the largest label of the train records (of the eval records when there is no train glob); the index
  built here is kept for the sources made next."""
  return source_from_config(cfg, 'train' if cfg.train_shards else 'eval').num_classes()
