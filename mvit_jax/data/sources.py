"""Where videos come from: PySlowFast manifests of video files or frame folders, prepared TFDS datasets, and (in
their own modules) folders of class folders (folder.py), prepared JPEG-frame shards (prepared.py) and DMVR
TFRecords (dmvr.py).

Manifests, classes files, videos and frame folders may be local paths or bucket URLs (gs://...), and manifest
rows may hold URLs or paths relative to a root that is one (mvit_jax.system.storage).

Every source gives random access by integer index (what grain's global shuffle needs): `len(source)`,
`source.label(i)`, `source.describe(i)` (a path for messages) and `source.load(i, index_fn, short_side)`, which
decodes only the frames `index_fn(num_video_frames, fps)` asks for (decode.py); `source.remote` says whether loads
read from a bucket (each then waits tens of ms for its bytes).
"""
from collections.abc import Callable
import dataclasses
import errno
import functools
import os

import numpy as np

from mvit_jax.data import decode
from mvit_jax.system import storage
from mvit_jax.system.errors import did_you_mean_path
from mvit_jax.system.errors import InputError


class ManifestError(InputError):
  """A manifest or classes file that cannot be used; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class VideoRecord:
  path: str                    # URL, absolute or root-joined path of a video file or frame folder.
  label: int | tuple[int, ...]  # Class index, or the class indices of a multi-label video.


def read_class_names(path: str) -> list[str]:
  """Class names, one per non-empty line; line i (counting non-empty lines) names label i."""
  try:
    names = [line.strip() for line in storage.read_text(path).splitlines() if line.strip()]
  except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
    raise _unreadable('classes file', path, e) from None
  if not names:
    raise ManifestError(f'classes file {path} is empty')
  return names


def _unreadable(what: str, path: str, error: Exception) -> ManifestError:
  """'cannot read {what} {path!r}: reason', with the closest name in its folder when the file is missing."""
  if isinstance(error, FileNotFoundError):  # A bucket's has no strerror.
    reason = os.strerror(errno.ENOENT) + did_you_mean_path(path)
  elif isinstance(error, OSError) and error.strerror:
    reason = error.strerror
  else:
    reason = f'{type(error).__name__}: {error}'
  return ManifestError(f'cannot read {what} {path!r}: {reason}')


def _root_joiner(root: str) -> Callable[[str], str]:
  """Manifest path -> record path: a URL or absolute path as it is, else joined to `root` (a local folder or a
  URL; a URL by string concatenation, as epath's join costs ~10 us, seconds for a Kinetics manifest)."""
  if not storage.is_url(root):
    return lambda rel: rel if storage.is_url(rel) else os.path.join(root, rel)
  prefix = root.rstrip('/') + '/'
  return lambda rel: rel if storage.is_url(rel) or os.path.isabs(rel) else prefix + rel


def _parse_manifest(path: str, root: str, multi_label: bool) -> tuple[tuple[VideoRecord, ...], np.ndarray, np.ndarray]:
  """(records, int64 (N,) their line numbers, int64 (N,) their largest labels) of a manifest; raises
  ManifestError naming file and line."""
  try:
    lines = storage.read_text(path).splitlines()
  except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
    raise _unreadable('manifest', path, e) from None
  join_root = _root_joiner(root)
  records, linenos, max_labels = [], [], []
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    parts = line.strip().rsplit(None, 1)
    where = f'{path}:{lineno}'
    if len(parts) != 2:
      raise ManifestError(f'{where}: expected "path label", got {line!r}')
    rel, label_text = parts
    try:
      labels = tuple(int(x) for x in label_text.split(',')) if multi_label else (int(label_text),)
    except ValueError:
      raise ManifestError(f'{where}: label {label_text!r} is not an integer'
                          + (' list' if multi_label else '')) from None
    if min(labels) < 0:
      raise ManifestError(f'{where}: label {min(labels)} outside [0, inf)')
    records.append(VideoRecord(join_root(rel), labels if multi_label else labels[0]))
    linenos.append(lineno)
    max_labels.append(max(labels))
  if not records:
    raise ManifestError(f'manifest {path} has no entries')
  return tuple(records), np.array(linenos), np.array(max_labels)


@functools.lru_cache(maxsize=8)
def _parse_manifest_cached(path: str, root: str, multi_label: bool, stamp: tuple):
  """_parse_manifest, once per file version: the trainer reads the train manifest for num_classes and for the
  loader, and the eval manifest at every evaluation. `stamp` (storage.version) makes a rewritten file re-read."""
  del stamp
  return _parse_manifest(path, root, multi_label)


def read_manifest(path: str, root: str = '', *, num_classes: int = 0,
                  multi_label: bool = False) -> list[VideoRecord]:
  """Parses `path label` lines (PySlowFast format; blank lines skipped).

  The label is split off at the last whitespace, so paths may contain spaces; relative paths are joined to `root`
  (URLs and absolute paths are kept).
  Multi-label lines carry comma-separated indices (`path 3,17`). With num_classes > 0, labels outside
  [0, num_classes) are errors. Raises ManifestError naming file and line. A file is parsed once per version
  (storage.version) in this process.
  """
  try:
    stamp = storage.version(path)
  except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
    raise _unreadable('manifest', path, e) from None
  records, linenos, max_labels = _parse_manifest_cached(path, root, multi_label, stamp)
  too_large = np.flatnonzero(max_labels >= num_classes) if num_classes else []
  if len(too_large):
    first = too_large[0]
    raise ManifestError(f'{path}:{linenos[first]}: label {max_labels[first]} outside [0, {num_classes})')
  return list(records)


def class_names_from_config(cfg) -> list[str] | None:
  """The class names of a data config (label i is name i): the class folders' names (dataset_kind 'folder'), the
  label map's names (dataset_kind 'ava': column i is action id i + 1), else the classes file's lines, else None."""
  if cfg.dataset_kind == 'folder':
    from mvit_jax.data import folder  # pylint: disable=g-import-not-at-top  (it imports this module)
    return list(folder.from_config(cfg).classes)
  if cfg.dataset_kind == 'ava' and cfg.ava_label_map:
    from mvit_jax.data import ava  # pylint: disable=g-import-not-at-top  (this kind only)
    return ava.class_names_from_config(cfg)
  return read_class_names(cfg.classes_file) if cfg.classes_file else None


def num_classes_from_config(cfg) -> int:
  """cfg.num_classes if set, else the number of class folders (dataset_kind 'folder'), the label map's largest id
  (dataset_kind 'ava'), else the classes file's length, else 1 + the largest label of the train manifest (or of
  the eval manifest when there is no train manifest)."""
  if cfg.num_classes:
    return cfg.num_classes
  if cfg.dataset_kind == 'folder':
    return len(class_names_from_config(cfg))
  if cfg.dataset_kind == 'ava':
    from mvit_jax.data import ava  # pylint: disable=g-import-not-at-top  (this kind only)
    return ava.num_classes_from_config(cfg)
  if cfg.classes_file:
    return len(read_class_names(cfg.classes_file))
  if cfg.dataset_kind == 'tfds':
    return _tfds_builder(cfg).info.features[cfg.tfds_label_key].num_classes
  if cfg.dataset_kind == 'dmvr':
    from mvit_jax.data import dmvr  # pylint: disable=g-import-not-at-top  (its protobuf classes: this kind only)
    return dmvr.num_classes_from_config(cfg)
  if cfg.dataset_kind == 'prepared':
    from mvit_jax.data import prepared  # pylint: disable=g-import-not-at-top  (array_record: this kind only)
    return prepared.num_classes(cfg.train_shards or cfg.eval_shards)
  manifest = cfg.train_manifest or cfg.eval_manifest
  if not manifest:
    raise ManifestError('data config needs num_classes, classes_file or a manifest to count classes from')
  records = read_manifest(manifest, cfg.root, multi_label=cfg.multi_label)
  return 1 + max(max(np.atleast_1d(r.label)) for r in records)


class FileSource:
  """Video files listed in a manifest, decoded with PyAV."""

  def __init__(self, records: list[VideoRecord], *, decode_threads: int = 1):
    self.records = records
    self.decode_threads = decode_threads
    self.remote = any(storage.is_url(r.path) for r in records)

  def __len__(self) -> int:
    return len(self.records)

  def label(self, i: int):
    return self.records[i].label

  def describe(self, i: int) -> str:
    return self.records[i].path

  def fetch(self, indices: list[int]) -> list:
    """What `load(i, ..., fetched=...)` takes for each index, read ahead: a bucket's objects' first bytes (or the
    error reading them), all requested at once; None for a local file, which the OS reads fast enough."""
    urls = [self.records[i].path for i in indices if storage.is_url(self.records[i].path)]
    heads = iter(storage.read_heads(urls))
    return [next(heads) if storage.is_url(self.records[i].path) else None for i in indices]

  def load(self, i: int, index_fn: decode.IndexFn, short_side: int = 0, fetched=None) -> decode.Clip:
    return decode.decode_video(self.records[i].path, index_fn, short_side=short_side, threads=self.decode_threads,
                               head=fetched)


class FrameFolderSource(FileSource):
  """Frame folders (one JPEG per frame, sorted by name) listed in a manifest, at a known frame rate."""

  fetch = None  # A folder is many small files, each read where its frame is decoded.

  def __init__(self, records: list[VideoRecord], *, fps: float, pattern: str = '*.jpg'):
    super().__init__(records)
    self.fps = fps
    self.pattern = pattern

  def load(self, i: int, index_fn: decode.IndexFn, short_side: int = 0) -> decode.Clip:
    return decode.decode_frame_folder(self.records[i].path, index_fn, fps=self.fps, pattern=self.pattern,
                                      short_side=short_side)


class TfdsSource:
  """A prepared TFDS video dataset read through `tfds.data_source` (random access; tfds imported lazily).

  Never downloads. TFDS stores videos as encoded frames and decodes all of them on access, so this is slower
  than a manifest of short-GOP mp4 files for long videos.
  """

  def __init__(self, name: str, split: str, *, data_dir: str = '', fps: float = 30.0, video_key: str = 'video',
               label_key: str = 'label'):
    self.name, self.split, self.data_dir = name, split, data_dir or None
    self.fps, self.video_key, self.label_key = fps, video_key, label_key
    self.remote = storage.is_url(data_dir)
    self._source, self._cached = None, (-1, None)
    self._len = len(self._data_source())

  def __getstate__(self):  # Workers reopen the data source themselves.
    return {**self.__dict__, '_source': None, '_cached': (-1, None)}

  def _data_source(self):
    if self._source is None:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      self._source = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir, download=False)
    return self._source

  def __len__(self) -> int:
    return self._len

  def _example(self, i: int) -> dict:
    if self._cached[0] != i:  # label(i) and load(i) come in pairs: read the record once.
      self._cached = (i, self._data_source()[i])
    return self._cached[1]

  def label(self, i: int):
    return int(self._example(i)[self.label_key])

  def describe(self, i: int) -> str:
    return f'tfds:{self.name}/{self.split}[{i}]'

  def load(self, i: int, index_fn: decode.IndexFn, short_side: int = 0) -> decode.Clip:
    video = np.asarray(self._example(i)[self.video_key])  # TFDS decodes every frame of a Video feature.
    if video.ndim == 3:  # An Image feature (e.g. imagenet2012 'image'): a one-frame clip.
      video = video[None]
    if video.ndim != 4 or video.shape[0] == 0:
      raise decode.DecodeError(f'feature {self.video_key!r} has shape {video.shape}, expected (N, H, W, 3) '
                               'or (H, W, 3)')
    indices = np.asarray(index_fn(len(video), self.fps), np.int64)
    frames = video[indices]
    height, width = decode.resized_shape(*frames.shape[1:3], short_side)
    if (height, width) != frames.shape[1:3]:
      from PIL import Image  # pylint: disable=g-import-not-at-top
      frames = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in frames])
    return decode.Clip(frames, indices, self.fps, len(video), len(video))


def _tfds_builder(cfg):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder(cfg.tfds_name, data_dir=cfg.tfds_data_dir or None)


def make_source(cfg, split: str, num_classes: int):
  """The source of `split` ('train' or 'eval') described by the data config (dataset_kind and its keys); manifest
  labels are checked against `num_classes` (resolve it once with num_classes_from_config)."""
  if split not in ('train', 'eval'):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  if cfg.dataset_kind == 'tfds':
    return TfdsSource(cfg.tfds_name, cfg.tfds_train_split if split == 'train' else cfg.tfds_eval_split,
                      data_dir=cfg.tfds_data_dir, fps=cfg.frames_fps, video_key=cfg.tfds_video_key,
                      label_key=cfg.tfds_label_key)
  if cfg.dataset_kind == 'folder':
    from mvit_jax.data import folder  # pylint: disable=g-import-not-at-top  (it imports this module)
    return folder.make_source(cfg, split, num_classes)
  if cfg.dataset_kind == 'dmvr':
    from mvit_jax.data import dmvr  # pylint: disable=g-import-not-at-top  (its protobuf classes: this kind only)
    return dmvr.source_from_config(cfg, split, num_classes)
  if cfg.dataset_kind == 'prepared':
    from mvit_jax.data import prepared  # pylint: disable=g-import-not-at-top  (array_record: this kind only)
    folder = cfg.train_shards if split == 'train' else cfg.eval_shards
    if not folder:
      raise ManifestError(f'data config has no {split}_shards')
    return prepared.PreparedSource(folder, num_classes=num_classes)
  manifest = cfg.train_manifest if split == 'train' else cfg.eval_manifest
  if not manifest:
    raise ManifestError(f'data config has no {split}_manifest')
  records = read_manifest(manifest, cfg.root, num_classes=num_classes, multi_label=cfg.multi_label)
  if cfg.dataset_kind == 'manifest':
    return FileSource(records, decode_threads=cfg.decode_threads)
  if cfg.dataset_kind == 'frames':
    return FrameFolderSource(records, fps=cfg.frames_fps, pattern=cfg.frame_glob)
  raise ValueError(f"data config dataset_kind must be 'manifest', 'frames', 'folder', 'tfds', 'prepared' or 'dmvr', "
                   f"got {cfg.dataset_kind!r}")
