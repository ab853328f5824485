"""Folder data sets (dataset_kind='folder'): videos sorted into one folder per class, no manifest.

  ROOT/<class>/<video>                                  split into train and eval by a seeded, stratified draw
  ROOT/train/<class>/<video> + ROOT/val/<class>/<video>  the splits as they are

Class names are the class folders' names, sorted; label i is the i-th name (train/'s in the second layout, and val/
must have the same class folders). A video is a file directly in a class folder whose name ends in one of
VIDEO_EXTENSIONS (any case); other files, and folders whose names start with '.', are ignored. Every listing is
sorted, so every process and host builds the same records. ROOT may be a bucket URL (gs://...).
"""
import concurrent.futures
import dataclasses
import functools
import hashlib
import math

from mvit_jax.data import sources
from mvit_jax.system import storage
from mvit_jax.system.errors import did_you_mean_path
from mvit_jax.system.errors import InputError

# Containers FFmpeg (PyAV) opens that people keep videos in; also what `predict` accepts as video files.
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg', '.flv', '.wmv', '.3gp', '.ogv')

SPLIT_FOLDERS = ('train', 'val')

# Class folders listed at once: a bucket answers each listing in tens of ms.
_LIST_THREADS = 16


class FolderError(InputError):
  """A folder data set that cannot be used; the message names the folder."""


@dataclasses.dataclass(frozen=True)
class FolderDataset:
  root: str
  classes: tuple[str, ...]                # Sorted class folder names; label i is classes[i].
  train: tuple[sources.VideoRecord, ...]  # Class by class, each class's videos sorted by name.
  eval: tuple[sources.VideoRecord, ...]
  given_split: bool                       # True: ROOT/train and ROOT/val; False: the seeded split.


def read(root: str, *, val_fraction: float = 0.1, split_seed: int = 0) -> FolderDataset:
  """Lists a folder data set (either layout) and splits it; raises FolderError naming the folder at fault.

  Without train/ and val/, each class's videos are ordered by sha256(f'{split_seed}/{class}/{name}') and the first
  round(val_fraction * n) go to eval: at least 1 and at most n - 1 when the class has n >= 2 videos, none when it
  has one. A hash rather than a random generator: the split is the same on every host and numpy version, and a
  video keeps its rank when others are added.
  """
  if not 0 < val_fraction < 1:
    raise FolderError(f'val_fraction must be in (0, 1), got {val_fraction}')
  top = _class_folders(root)
  if set(SPLIT_FOLDERS) <= set(top):
    train_root, val_root = storage.join(root, 'train'), storage.join(root, 'val')
    classes = _class_folders(train_root)
    val_classes = _class_folders(val_root)
    unknown = sorted(set(val_classes) - set(classes))
    if unknown:
      raise FolderError(f'{val_root}: class folders {", ".join(unknown)} are not in {train_root}')
    missing = sorted(set(classes) - set(val_classes))
    if missing:
      raise FolderError(f'{val_root}: no class folders {", ".join(missing)} (as {train_root} has)')
    train = _list_videos(train_root, classes)
    val = _list_videos(val_root, classes)
    return FolderDataset(root, tuple(classes), _records(train_root, classes, train),
                         _records(val_root, classes, val), True)
  classes = top
  videos = _list_videos(root, classes)
  train, val = zip(*(split_class(c, names, val_fraction, split_seed) for c, names in zip(classes, videos)))
  return FolderDataset(root, tuple(classes), _records(root, classes, train), _records(root, classes, val), False)


@functools.lru_cache(maxsize=4)
def read_cached(root: str, val_fraction: float, split_seed: int) -> FolderDataset:
  """read(), once per process: the trainer needs the classes, the train records and, at every evaluation, the
  eval records."""
  return read(root, val_fraction=val_fraction, split_seed=split_seed)


def from_config(cfg) -> FolderDataset:
  """The data set of a data config (root, folder_val_fraction, folder_split_seed), listed once per process."""
  if not cfg.root:
    raise FolderError("config.data.root is empty: dataset_kind 'folder' reads the class folders there")
  return read_cached(cfg.root, cfg.folder_val_fraction, cfg.folder_split_seed)


def make_source(cfg, split: str, num_classes: int) -> sources.FileSource:
  """The FileSource of `split` ('train' or 'eval'); `num_classes` must be the number of class folders."""
  dataset = from_config(cfg)
  if num_classes != len(dataset.classes):
    raise FolderError(f'config.data.num_classes is {num_classes} but {dataset.root} has {len(dataset.classes)} class '
                      'folders (0 takes their number)')
  records = dataset.train if split == 'train' else dataset.eval
  if not records:
    raise FolderError(f'{dataset.root}: no {split} videos (a class needs 2 videos to give one to eval)')
  return sources.FileSource(list(records), decode_threads=cfg.decode_threads)


def split_class(name: str, videos: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
  """(train, eval) file names of one class's videos, each sorted (see read)."""
  order = sorted(videos, key=lambda video: hashlib.sha256(f'{seed}/{name}/{video}'.encode()).digest())
  n = len(order)
  num_eval = 0 if n < 2 else min(n - 1, max(1, math.floor(val_fraction * n + 0.5)))
  return sorted(order[num_eval:]), sorted(order[:num_eval])


def is_video(file_name: str) -> bool:
  return file_name.lower().endswith(VIDEO_EXTENSIONS)


def _class_folders(folder: str) -> list[str]:
  """Sorted names of the visible folders in `folder`; FolderError when it is missing or holds none."""
  try:
    names = [n for n in storage.subfolders(folder) if not n.startswith('.')]
  except (FileNotFoundError, NotADirectoryError):
    raise FolderError(f'{folder}: no such folder{did_you_mean_path(folder)}') from None
  except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
    raise FolderError(f'cannot list {folder!r}: {storage.describe_error(e)}') from None
  if not names:
    raise FolderError(f'{folder}: no class folders (expected {folder}/<class>/<video>, or train/ and val/ '
                      'holding class folders)')
  return names


def _list_videos(folder: str, classes: list[str]) -> list[list[str]]:
  """Sorted video file names of each class folder in `folder`; FolderError naming a class folder that has none."""
  def list_class(name: str) -> list[str]:
    class_folder = storage.join(folder, name)
    try:
      videos = sorted(n for n in storage.listdir(class_folder) if is_video(n))
    except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
      raise FolderError(f'cannot list {class_folder!r}: {storage.describe_error(e)}') from None
    if not videos:
      raise FolderError(f'{class_folder}: no video files (names ending in {", ".join(VIDEO_EXTENSIONS)})')
    return videos

  with concurrent.futures.ThreadPoolExecutor(min(_LIST_THREADS, len(classes))) as pool:
    return list(pool.map(list_class, classes))


def _records(folder: str, classes: list[str], videos) -> tuple[sources.VideoRecord, ...]:
  records = []
  for label, (name, names) in enumerate(zip(classes, videos)):
    # One join per class, then concatenation: a join per video costs ~10 us, seconds for a Kinetics-sized set.
    prefix = storage.join(folder, name) + '/'
    records.extend(sources.VideoRecord(prefix + video, label) for video in names)
  return tuple(records)
