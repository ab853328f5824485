"""Paths that are local folders or bucket URLs (`gs://bucket/...`), read and written through one path type.

Every file mvit_jax reads or writes goes through `etils.epath` (orbax and the JAX compilation cache use it
too): a local path goes to the OS, a URL to fsspec (gcsfs for gs://), which retries transient errors
(connection refused, 429, 5xx, timeouts) with exponential backoff. `mvit_jax/__init__.py` sets `EPATH_USE_TF=false`
so that epath picks fsspec over TensorFlow's gfile for URLs: one client for our files and orbax's, and the one
the GCS emulator (fake-gcs-server, `STORAGE_EMULATOR_HOST`) can test.

Object stores have no folders and no rename: `mkdir` is a no-op there, a write of one object is atomic (readers
see the old or the new object, never half), and `move` is copy-then-delete.
"""
from __future__ import annotations

import contextlib
import fnmatch
import glob as glob_lib
import io
import os
import shutil
import tempfile
from typing import IO, Iterator

from etils import epath
import fsspec

PathLike = str | os.PathLike

# gcsfs keeps folder listings for the life of the process by default; other hosts, other processes and orbax's
# threads write to the same workdir, so every listing asks the store.
fsspec.config.conf.setdefault('gcs', {})['use_listings_cache'] = False

# PyAV reads a video through small reads and seeks; against a bucket each uncached one would be a request (tens of
# milliseconds). A URL is opened with one request for its first block this large (all of most videos), and a
# larger object is read on through an LRU cache of such blocks: a bounded number of requests for long videos.
READ_BLOCK_BYTES = 8 << 20


class StoreError(Exception):
  """A bucket that stays unreachable after the client's retries; the message names the path."""


def describe_error(error: Exception) -> str:
  """'TypeName: first line of the message': a client error (credentials, network, HTTP) in one line."""
  lines = str(error).splitlines()
  return f'{type(error).__name__}: {lines[0] if lines else ""}'


def is_url(path: PathLike) -> bool:
  """True for `scheme://...` (gs://, s3://, ...), False for a local path."""
  return '://' in os.fspath(path)


def resolve(path: PathLike) -> str:
  """An absolute local path (`~` expanded), or the URL unchanged."""
  path = os.fspath(path)
  return path if is_url(path) else os.path.abspath(os.path.expanduser(path))


def join(base: PathLike, *parts: str) -> str:
  """`base/part/...` for a local path or a URL."""
  return os.fspath(epath.Path(base).joinpath(*parts)) if is_url(base) else os.path.join(base, *parts)


def parent(path: PathLike) -> str:
  """The folder holding `path` ('' for a bare local file name)."""
  return os.fspath(epath.Path(path).parent) if is_url(path) else os.path.dirname(os.fspath(path))


def name(path: PathLike) -> str:
  """The last component of `path`."""
  return epath.Path(path).name


def exists(path: PathLike) -> bool:
  return epath.Path(path).exists()


def isdir(path: PathLike) -> bool:
  return epath.Path(path).is_dir()


def isfile(path: PathLike) -> bool:
  return epath.Path(path).is_file()


def listdir(path: PathLike) -> list[str]:
  """Names in the folder `path` (not sorted)."""
  if not is_url(path):
    return os.listdir(path)  # epath makes a Path object per entry: seconds for a folder of 100k videos.
  return [p.name for p in epath.Path(path).iterdir()]


def subfolders(path: PathLike) -> list[str]:
  """Sorted names of the folders directly in `path`: one listing (a URL's with one request, where asking is_dir of
  each entry would cost a request per entry)."""
  path = os.fspath(path)
  if not is_url(path):
    with os.scandir(path) as entries:
      return sorted(entry.name for entry in entries if entry.is_dir())
  fs = epath.backend.fsspec_backend.fs(path)
  return sorted(name(entry['name']) for entry in fs.ls(path, detail=True) if entry['type'] == 'directory')


def glob(folder: PathLike, pattern: str) -> list[str]:
  """Sorted paths of the entries directly in `folder` whose names match `pattern` ('*.jpg'; fnmatch syntax, as
  glob.glob's; a missing folder has none)."""
  folder = os.fspath(folder)
  if not is_url(folder):
    return sorted(glob_lib.glob(os.path.join(glob_lib.escape(folder), pattern)))
  try:
    entries = listdir(folder)
  except FileNotFoundError:
    return []
  return sorted(join(folder, entry) for entry in entries if fnmatch.fnmatchcase(entry, pattern))


def version(path: PathLike) -> tuple:
  """(modification time in ns, size in bytes) of a local file, (generation or modification time, size) of an
  object: a cache key that changes whenever the file is rewritten. Raises FileNotFoundError."""
  if not is_url(path):
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size
  path = os.fspath(path)
  info = epath.backend.fsspec_backend.fs(path).info(path)
  return info.get('generation') or info.get('mtime'), info['size']


def makedirs(path: PathLike) -> None:
  """Creates the folder and its parents (nothing to do in a bucket)."""
  if not is_url(path):
    os.makedirs(path, exist_ok=True)


def open_file(path: PathLike, mode: str = 'r', *, head: bytes | None = None) -> IO:
  """`open` for a local path or a URL. A URL's object is read with one ranged request of READ_BLOCK_BYTES (or
  given as `head`, what `read_heads` returned for it): an object no larger is then in memory whole (one request, no
  size lookup); a larger one is read through the block cache, which starts with that first block. Either way the
  file object has `.size` (bytes)."""
  if is_url(path) and 'r' in mode:
    path = os.fspath(path)
    fs = epath.backend.fsspec_backend.fs(path)
    if head is None:
      head = read_heads([path])[0]
      if isinstance(head, Exception):
        raise head
    if len(head) < READ_BLOCK_BYTES:
      binary = _InMemoryFile(head)
    else:
      binary = fs.open(path, 'rb', block_size=READ_BLOCK_BYTES, cache_type=_HeadBlockCache.name,
                       cache_options={'head': head})
    return binary if 'b' in mode else io.TextIOWrapper(binary, encoding='utf-8', newline='')
  return epath.Path(path).open(mode)


def read_heads(urls: list[str]) -> list[bytes | Exception]:
  """The first READ_BLOCK_BYTES of each object (for `open_file(url, head=...)`): `read_many`."""
  return read_many(urls, READ_BLOCK_BYTES)


def read_many(urls: list[str], length: int | None = None) -> list[bytes | Exception]:
  """Each object's bytes (its first `length` when given), all requested at once: one request's latency for the
  lot. An object that cannot be read gives its exception (after the client's retries)."""
  results = [None] * len(urls)
  by_scheme = {}
  for position, url in enumerate(urls):
    by_scheme.setdefault(url.split('://', 1)[0], []).append(position)
  for positions in by_scheme.values():
    fs = epath.backend.fsspec_backend.fs(urls[positions[0]])
    read = fs.cat_ranges([urls[p] for p in positions], 0 if length else None, length, on_error='return')
    for position, result in zip(positions, _unsatisfiable_as_empty(read)):
      results[position] = result
  return results


def _unsatisfiable_as_empty(results: list) -> list:
  """A range of an empty object is "not satisfiable" (HTTP 416): its bytes are none."""
  return [b'' if getattr(r, 'code', None) == 416 else r for r in results]


class _HeadBlockCache(fsspec.caching.BlockCache):
  """fsspec's LRU block cache, holding from the start the object's first block, already read: a reader (PyAV) that
  starts at byte 0 does not request it again."""

  name = 'mvit_jax_head_block'

  def __init__(self, blocksize: int, fetcher, size: int, head: bytes = b'', maxblocks: int = 32):
    super().__init__(blocksize, fetcher, size, maxblocks)
    self.head = head

  def _fetch_block(self, block_number: int) -> bytes:
    if block_number == 0 and len(self.head) == self.blocksize:
      return self.head
    return super()._fetch_block(block_number)


fsspec.caching.register_cache(_HeadBlockCache)


class _InMemoryFile(io.BytesIO):
  """A whole object's bytes as a binary file, with `.size` as gcsfs's file objects have."""

  def __init__(self, data: bytes):
    super().__init__(data)
    self.size = len(data)


def read_text(path: PathLike) -> str:
  return epath.Path(path).read_text()


def read_bytes(path: PathLike) -> bytes:
  return epath.Path(path).read_bytes()


def read_range(path: PathLike, start: int, length: int) -> bytes:
  """Bytes [start, start + length) of a file (fewer where it ends first, none from its end on); a URL's with one
  ranged request."""
  if is_url(path):
    path = os.fspath(path)
    try:
      return epath.backend.fsspec_backend.fs(path).cat_file(path, start=start, end=start + length)
    except Exception as e:  # pylint: disable=broad-except
      if getattr(e, 'code', None) != 416:  # A range from the end of the object on is "not satisfiable".
        raise
      return b''
  with open(path, 'rb') as f:
    f.seek(start)
    return f.read(length)


def write_text(path: PathLike, text: str) -> None:
  """Writes `text` so that a reader sees the old file or the new one, never half (local: temporary file, then
  rename; a bucket object is replaced whole)."""
  write_bytes(path, text.encode('utf-8'))


def write_bytes(path: PathLike, data: bytes) -> None:
  """`write_text` for bytes."""
  if is_url(path):
    epath.Path(path).write_bytes(data)
    return
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}-', dir=folder)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp's 0o600 would stay on the file.
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def remove_tree(path: PathLike) -> None:
  """Deletes a folder (or a URL prefix) and all under it; nothing to do when it does not exist."""
  p = epath.Path(path)
  if p.exists():
    p.rmtree() if p.is_dir() else p.unlink()


def move(src: PathLike, dst: PathLike) -> None:
  """Moves a file or folder: a rename on local disk, copy-then-delete in a bucket (which has no rename)."""
  if not is_url(src) and not is_url(dst):
    shutil.move(os.fspath(src), os.fspath(dst))
    return
  src_path, dst_path = epath.Path(src), epath.Path(dst)
  if src_path.is_dir():
    for rel in files_under(src_path):
      copy_file(src_path / rel, dst_path / rel)
  else:
    copy_file(src_path, dst_path)
  remove_tree(src_path)


def files_under(folder: PathLike) -> list[str]:
  """Sorted relative paths ('a/b.txt') of every file under `folder`."""
  folder = os.fspath(folder)
  if is_url(folder):
    fs = epath.backend.fsspec_backend.fs(folder)
    base = fs._strip_protocol(folder).rstrip('/')  # pylint: disable=protected-access
    return sorted(path[len(base) + 1:] for path in fs.find(folder))
  return sorted(os.path.relpath(os.path.join(dirpath, f), folder).replace(os.sep, '/')
                for dirpath, _, filenames in os.walk(folder) for f in filenames)


def copy_file(src: PathLike, dst: PathLike) -> None:
  """Copies one file between any two places (local or URL)."""
  dst_path = epath.Path(dst)
  if not is_url(dst):
    dst_path.parent.mkdir(parents=True, exist_ok=True)
  epath.Path(src).copy(dst_path, overwrite=True)


def upload_tree(local_folder: PathLike, dst: PathLike, *, last: str | None = None) -> None:
  """Copies every file under `local_folder` to the same relative paths under `dst`, the file named `last` (a
  relative path) after all others, so that a reader who waits for it sees the whole folder."""
  files = files_under(local_folder)
  files.sort(key=lambda rel: rel == last)
  for rel in files:
    copy_file(join(local_folder, rel), join(dst, rel))


@contextlib.contextmanager
def local_file(path: PathLike) -> Iterator[str]:
  """A local path holding the file at `path` (the path itself, or a temporary copy of a URL's object) for
  libraries that open files by name."""
  if not is_url(path):
    yield os.fspath(path)
    return
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, name(path))
    copy_file(path, local)
    yield local
