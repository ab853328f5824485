"""Prepared shards: videos stored as JPEG frames in ArrayRecord files, and the source that reads them.

A prepared folder (written by `python -m mvit_jax.data.prepare`, local or gs://) holds
  shard-SSSSS-of-NNNNN.array_record   one record per video (manifest order), see `encode_record`;
  shard-SSSSS-of-NNNNN.done.json      the shard's completion record: its videos, its bad videos, the settings;
  index.json                          written last: every video's shard, position, label, frame count, fps, size
                                      and source path, the bad videos with their reasons, the settings.
Frame j of a record is the frame `decode.decode_video` gives for index j (the frame shown at time j / fps), so
clips sample the same frames as from the video file.

ArrayRecord files carry their own index of record offsets: a record is one ranged read, locally or in a bucket
(array_record's own GCS client reads gs:// paths; it honours CLOUD_STORAGE_EMULATOR_ENDPOINT, not
STORAGE_EMULATOR_HOST).
"""
import json

from array_record.python import array_record_module
import msgpack
import numpy as np

from mvit_jax.data import decode
from mvit_jax.system import storage
from mvit_jax.system.errors import InputError

INDEX_NAME = 'index.json'
FORMAT_VERSION = 1
# One record per chunk (random access reads one chunk), no compression (JPEG bytes do not compress).
WRITER_OPTIONS = 'group_size:1,uncompressed'
# grain's random-access reader options: no read-ahead, no parallel prefetch.
READER_OPTIONS = 'readahead_buffer_size:0,max_parallelism:0'


def shard_name(shard: int, num_shards: int) -> str:
  return f'shard-{shard:05d}-of-{num_shards:05d}.array_record'


def done_name(shard: int, num_shards: int) -> str:
  return f'shard-{shard:05d}-of-{num_shards:05d}.done.json'


def to_json(value) -> str:
  """The one serialisation of completion records and the index: key order fixed, so reruns give equal bytes."""
  return json.dumps(value, sort_keys=True, separators=(',', ':')) + '\n'


def encode_record(*, path: str, label, fps: float, height: int, width: int, frames: list[bytes]) -> bytes:
  """One video's record: a msgpack map of its source path, label (int or list of ints), fps (frames per second
  of the stored frames), num_frames, height and width (pixels of the stored frames) and frames (JPEG bytes per
  frame, frame-index order)."""
  return msgpack.packb({'path': path, 'label': label, 'fps': fps, 'num_frames': len(frames), 'height': height,
                        'width': width, 'frames': frames})


def read_index(folder: str) -> dict:
  """The index of a prepared folder; InputError naming the folder when it has none or it does not parse."""
  path = storage.join(folder, INDEX_NAME)
  try:
    index = json.loads(storage.read_text(path))
  except FileNotFoundError:
    raise InputError(f'{folder!r} holds no {INDEX_NAME} (not a prepared folder, or prepare has not finished)') \
        from None
  except (OSError, ValueError) as e:
    raise InputError(f'cannot read {path!r}: {e}') from None
  if index.get('settings', {}).get('format') != FORMAT_VERSION:
    raise InputError(f'{path!r}: format {index.get("settings", {}).get("format")!r}, expected {FORMAT_VERSION}')
  return index


def num_classes(folder: str) -> int:
  """1 + the largest label of a prepared folder's videos."""
  labels = read_index(folder)['videos']['label']
  if not labels:
    raise InputError(f'{folder!r} holds no videos')
  return 1 + max(max(np.atleast_1d(label)) for label in labels)


class PreparedSource:
  """The videos of a prepared folder: `label(i)` from the index, `load` reads one record and decodes only the
  JPEGs a clip uses."""

  def __init__(self, folder: str, *, num_classes: int = 0):  # pylint: disable=redefined-outer-name
    index = read_index(folder)
    videos = index['videos']
    self.folder = folder
    self.remote = storage.is_url(folder)
    self.shards = [storage.join(folder, name) for name in index['shards']]
    self._shard = np.asarray(videos['shard'], np.int32)
    self._position = np.asarray(videos['position'], np.int64)
    self._labels = [tuple(label) if isinstance(label, list) else label for label in videos['label']]
    self._paths = videos['path']
    if num_classes:
      too_large = [label for label in self._labels if max(np.atleast_1d(label)) >= num_classes]
      if too_large:
        raise InputError(f'{folder}: label {max(np.atleast_1d(too_large[0]))} outside [0, {num_classes})')
    self._readers = {}  # Shard -> reader, opened on first use in each process.

  def __getstate__(self):  # Workers open their own readers.
    return {**self.__dict__, '_readers': {}}

  def __len__(self) -> int:
    return len(self._labels)

  def label(self, i: int):
    return self._labels[i]

  def describe(self, i: int) -> str:
    return self._paths[i]

  def _reader(self, shard: int):
    # Loader threads may open one shard twice at first; the spare reader is closed when dropped.
    if shard not in self._readers:
      self._readers[shard] = array_record_module.ArrayRecordReader(self.shards[shard], READER_OPTIONS)
    return self._readers[shard]

  def load(self, i: int, index_fn: decode.IndexFn, short_side: int = 0) -> decode.Clip:
    """The frames `index_fn(num_frames, fps)` asks for, (N, H, W, 3) uint8, short side `short_side` (0: as
    stored). Raises decode.DecodeError when the record cannot be read or a JPEG cannot be decoded."""
    shard, position = int(self._shard[i]), int(self._position[i])
    try:
      record = msgpack.unpackb(self._reader(shard).read([position])[0])
      jpegs, fps, height, width = record['frames'], float(record['fps']), record['height'], record['width']
    except Exception as e:  # pylint: disable=broad-except  (array_record's and msgpack's errors name no type)
      raise decode.DecodeError(f'cannot read record {position} of {self.shards[shard]}: '
                               f'{storage.describe_error(e)}') from None
    if not jpegs:
      raise decode.DecodeError(f'record {position} of {self.shards[shard]} has no frames')
    indices = np.asarray(index_fn(len(jpegs), fps), np.int64)
    cache = {}
    for j in np.unique(indices).tolist():
      try:
        cache[j] = decode.decode_image(jpegs[j], short_side, (height, width))
      except Exception as e:  # pylint: disable=broad-except  (OpenCV's errors)
        raise decode.DecodeError(f'cannot decode frame {j} of record {position} of {self.shards[shard]}: '
                                 f'{storage.describe_error(e)}') from None
    return decode.Clip(np.stack([cache[j] for j in indices.tolist()]), indices, fps, len(jpegs), len(cache))
