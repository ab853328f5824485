"""Batches from grain worker processes in shared memory that is recycled instead of allocated for every batch.

A grain worker hands each batch to the main process in a fresh shared-memory block (grain's SharedMemoryArray),
which the main process unlinks once the batch is dropped. The kernel allocates and zeroes every page of a fresh
block when it is first written and frees them again at the end: with grain's own blocks two loader workers deliver
127 clips/s (15.6 ms of CPU per clip), with these 151 (13.1 ms), 19% more (`python scripts/bench_data.py --clips
160 --workers 2`, docs/performance.md). grain passes on, without copying, leaves that already are
SharedMemoryArrays, so here
  - workers stack large leaves into blocks of their own pool (`stack`, grain's batch_fn), each block followed by a
    small trailer whose state byte says who holds it: the worker (in use), the main process (sent: grain took its
    metadata for the queue), nobody (free), or the main process alone (orphaned: the worker has exited);
  - the main process (`recycle_when_dropped`, a map after mp_prefetch) keeps grain from unlinking those blocks and,
    once a batch array is garbage, marks its block free, or unlinks it when orphaned;
  - the worker reuses free blocks, whose pages are already in place, and frees blocks of batches it drops without
    sending (its own read-ahead, discarded by close() or set_state()). When none is free it takes a new block that
    a background thread created and populated (madvise(MADV_POPULATE_WRITE), without the GIL) one batch ahead.
Blocks grain unlinks itself (sent batches dropped by close() or set_state()) are forgotten. A worker that exits
unlinks every block but the sent ones, which it marks orphaned; the state byte changes under a POSIX record lock,
so that a block the main process frees while its worker exits is unlinked by one of them. A worker whose main
process is gone (killed) unlinks all its blocks (`unlink_all`); blocks of a killed worker are unlinked by the main
process when their batch is dropped. grain unlinks the batches it drops on close in a background thread pool that
the main process's exit may end first, so at exit the main process unlinks every block left by its exited workers.
grain has no option for any of this, hence this file.
"""
import atexit
import collections
from concurrent import futures
import contextlib
import ctypes
import fcntl
import math
import mmap
from multiprocessing import shared_memory
from multiprocessing import util as mp_util
import os
import threading
from typing import Any, Sequence
import weakref

from grain import multiprocessing as grain_mp
import numpy as np

_MADV_POPULATE_WRITE = 23  # Linux >= 5.14; older kernels fall back to writing zeros.
# Smaller leaves (labels, masks, failed indices) are stacked as usual and go through grain's pipe: the loaders set
# grain's min_shm_size to this, so every leaf that would get a fresh shared-memory block gets a pooled one.
MIN_POOLED_BYTES = 1 << 16
_MAGIC = b'mvitpool'
_STATE = len(_MAGIC)  # Trailer offsets: magic, one state byte, the worker's pid (uint64, little-endian).
_PID = _STATE + 1
_TRAILER = _PID + 8
_FREE, _IN_USE, _SENT, _ORPHANED = 0, 1, 2, 3
_SHM_DIR = '/dev/shm'  # Where POSIX shared memory lives on Linux (SharedMemory names are files there).

_LIBC = ctypes.CDLL(None, use_errno=True)


def _populate(shm: shared_memory.SharedMemory) -> None:
  """Makes the kernel allocate every page of `shm` now; ctypes calls run without the GIL."""
  window = (ctypes.c_char * shm.size).from_buffer(shm.buf)
  try:
    address = ctypes.addressof(window)
    if _LIBC.madvise(ctypes.c_void_p(address), ctypes.c_size_t(shm.size), _MADV_POPULATE_WRITE) != 0:
      ctypes.memset(address, 0, shm.size)
  finally:
    del window  # Releases the export of shm.buf, so the block can be closed.


def _new_block(data_bytes: int) -> shared_memory.SharedMemory:
  shm = shared_memory.SharedMemory(create=True, size=data_bytes + _TRAILER)
  _populate(shm)
  shm.buf[data_bytes:data_bytes + _STATE] = _MAGIC
  shm.buf[data_bytes + _PID:data_bytes + _TRAILER] = os.getpid().to_bytes(8, 'little')
  return shm


def _state_offset(shm: shared_memory.SharedMemory) -> int:
  return shm.size - _TRAILER + _STATE


@contextlib.contextmanager
def _locked_state(name: str, state_offset: int):
  """A file descriptor of block `name` while this process holds the lock on its state byte; FileNotFoundError
  once the block is unlinked."""
  fd = os.open(os.path.join(_SHM_DIR, name), os.O_RDWR)
  try:
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, state_offset)
    yield fd
  finally:
    os.close(fd)  # Also releases the lock.


def _unlink(name: str) -> None:
  """Unlinks block `name` through multiprocessing, so that its resource tracker forgets it."""
  try:
    shm = shared_memory.SharedMemory(name)
  except FileNotFoundError:
    return
  shm.close()
  shm.unlink()


class _PooledArray(grain_mp.SharedMemoryArray):
  """A worker's view of a pooled block: grain sends its metadata like any SharedMemoryArray's, which marks the
  block sent; dropping the array does not close the block (SharedMemoryArray.__del__ would), which stays mapped in
  the pool, and frees it when it was never sent."""

  @property
  def metadata(self):
    self.shm.buf[_state_offset(self.shm)] = _SENT
    return super().metadata

  def __del__(self) -> None:
    if not isinstance(self.base, mmap.mmap):  # A view: the array it views holds the block.
      return
    try:
      if self.shm.buf[_state_offset(self.shm)] == _IN_USE:
        self.shm.buf[_state_offset(self.shm)] = _FREE
    except (TypeError, ValueError):  # The pool has closed the block (the worker is exiting).
      pass


class _BlockPool:
  """A worker's shared-memory blocks by data size: handed out, free again, or being populated ahead."""

  def __init__(self, blocks_ahead: int = 1):
    self._blocks_ahead = blocks_ahead
    self._lock = threading.Lock()  # Read threads build batches at once; each must get a block of its own.
    self._executor = futures.ThreadPoolExecutor(1, thread_name_prefix='shm-populate')
    self._pending: dict[int, collections.deque[futures.Future]] = collections.defaultdict(collections.deque)
    self._handed_out: dict[int, list[shared_memory.SharedMemory]] = collections.defaultdict(list)
    # Unlink this worker's blocks when it exits (multiprocessing skips atexit in children).
    mp_util.Finalize(self, self.close, exitpriority=10)

  def _reusable_block(self, data_bytes: int) -> shared_memory.SharedMemory | None:
    blocks, found = self._handed_out[data_bytes], None
    for shm in list(blocks):
      if not os.path.exists(os.path.join(_SHM_DIR, shm.name)):  # grain unlinked it (a dropped batch).
        blocks.remove(shm)
        shm.close()
      elif found is None and shm.buf[data_bytes + _STATE] == _FREE:
        found = shm
    return found

  def array(self, shape: tuple[int, ...], dtype: np.dtype) -> _PooledArray:
    """An uninitialised SharedMemoryArray of `shape` whose pages are already allocated."""
    data_bytes = math.prod(shape) * np.dtype(dtype).itemsize
    with self._lock:
      shm = self._reusable_block(data_bytes)
      if shm is None:
        pending = self._pending[data_bytes]
        if not pending:
          pending.append(self._executor.submit(_new_block, data_bytes))
        shm = pending.popleft().result()
        while len(pending) < self._blocks_ahead:
          pending.append(self._executor.submit(_new_block, data_bytes))
        self._handed_out[data_bytes].append(shm)
      shm.buf[data_bytes + _STATE] = _IN_USE
    return _PooledArray.from_shared_memory(shm, shape, dtype)

  def close(self) -> None:
    """Unlinks every block but those sent to the main process, which become the main process's to unlink."""
    self._executor.shutdown(wait=True)
    spare = [future.result() for pending in self._pending.values() for future in pending]
    for shm in spare:
      try:
        shm.unlink()
      except FileNotFoundError:  # unlink_all ran.
        pass
    for shm in [shm for handed_out in self._handed_out.values() for shm in handed_out]:
      try:
        with _locked_state(shm.name, _state_offset(shm)) as fd:
          if os.pread(fd, 1, _state_offset(shm))[0] == _SENT:
            os.pwrite(fd, bytes([_ORPHANED]), _state_offset(shm))
          else:
            shm.unlink()
      except FileNotFoundError:  # Unlinked by grain's main process already.
        pass
    for shm in spare + [shm for handed_out in self._handed_out.values() for shm in handed_out]:
      try:
        shm.close()
      except (BufferError, OSError):  # Still mapped by an array of this worker: it goes with the process.
        pass
    self._pending.clear()
    self._handed_out.clear()

  def unlink_all(self) -> None:
    """Unlinks every block of this pool, those in use included: for when the main process is gone.

    Runs in another thread than `array`, so it walks snapshots; a block created meanwhile stays registered with
    multiprocessing's resource tracker, which unlinks it once this process has exited.
    """
    pending = [future for futures_of_size in list(self._pending.values()) for future in list(futures_of_size)]
    blocks = [future.result() for future in pending if future.done() and future.exception() is None]
    blocks += [shm for handed_out in list(self._handed_out.values()) for shm in list(handed_out)]
    for shm in blocks:
      try:
        shm.unlink()
      except FileNotFoundError:  # grain unlinked it already (a dropped batch).
        pass


_POOL: _BlockPool | None = None


def enable_in_this_process() -> None:
  """Call in a grain worker (worker_init_fn): from then on `stack` writes large leaves into pooled blocks."""
  global _POOL
  if _POOL is None:
    _POOL = _BlockPool()


def unlink_all() -> None:
  """In a grain worker whose main process is gone: unlinks every pooled block of this process."""
  if _POOL is not None:
    _POOL.unlink_all()


def stack(elements: Sequence[dict]) -> dict:
  """grain batch_fn: dicts of arrays -> dict of stacked arrays (B, ...), as grain's default batching gives.

  In a process where `enable_in_this_process` ran, leaves of at least MIN_POOLED_BYTES are stacked into pooled
  shared memory.
  """
  batch = {}
  for key in elements[0]:
    leaves = [np.asarray(element[key]) for element in elements]
    shape, dtype = (len(leaves),) + leaves[0].shape, leaves[0].dtype
    if _POOL is not None and math.prod(shape) * dtype.itemsize >= MIN_POOLED_BYTES:
      batch[key] = np.stack(leaves, out=_POOL.array(shape, dtype))
    else:
      batch[key] = np.stack(leaves)
  return batch


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except (ProcessLookupError, PermissionError):  # Gone (PermissionError: its pid now belongs to someone else).
    return False
  return True


def _release(name: str, state_offset: int, worker_pid: int) -> None:
  """A batch array died in the main process: its block goes back to the worker, or away if the worker is gone
  (orphaned on exit, or killed)."""
  try:
    with _locked_state(name, state_offset) as fd:
      if os.pread(fd, 1, state_offset)[0] == _ORPHANED or not _alive(worker_pid):
        _unlink(name)
      else:
        os.pwrite(fd, bytes([_FREE]), state_offset)
  except FileNotFoundError:  # grain or the exiting worker unlinked it.
    pass


_WORKER_PIDS: set[int] = set()  # Main process: the workers whose pooled blocks it has received.


def _unlink_blocks_of_exited_workers() -> None:
  """Main process, at exit: unlinks the pooled blocks in /dev/shm whose worker (one of ours) has exited."""
  for entry in os.scandir(_SHM_DIR):
    if not entry.name.startswith('psm_'):  # multiprocessing's SharedMemory names.
      continue
    try:
      fd = os.open(entry.path, os.O_RDONLY)
    except OSError:  # Unlinked meanwhile, or another user's.
      continue
    try:
      size = os.fstat(fd).st_size
      trailer = os.pread(fd, _TRAILER, size - _TRAILER) if size >= _TRAILER else b''
    finally:
      os.close(fd)
    if trailer[:_STATE] != _MAGIC:
      continue
    worker_pid = int.from_bytes(trailer[_PID:_TRAILER], 'little')
    if worker_pid in _WORKER_PIDS and not _alive(worker_pid):
      _unlink(entry.name)


def recycle_when_dropped(batch: dict[str, Any]) -> dict[str, Any]:
  """Main process, after mp_prefetch: pooled blocks go back to their worker when their batch array is garbage.

  grain would unlink them (its SharedMemoryArray's private `_unlink_on_del`); where grain changes that, the worker
  sees the name gone and allocates a new block, as grain alone would.
  """
  for leaf in batch.values():
    if not isinstance(leaf, grain_mp.SharedMemoryArray) or leaf.shm is None or not hasattr(leaf, '_unlink_on_del'):
      continue
    data_bytes = leaf.nbytes
    if leaf.shm.size != data_bytes + _TRAILER or bytes(leaf.shm.buf[data_bytes:data_bytes + _STATE]) != _MAGIC:
      continue
    worker_pid = int.from_bytes(leaf.shm.buf[data_bytes + _PID:data_bytes + _TRAILER], 'little')
    if not _WORKER_PIDS:
      atexit.register(_unlink_blocks_of_exited_workers)
    _WORKER_PIDS.add(worker_pid)
    leaf._unlink_on_del = False  # pylint: disable=protected-access
    weakref.finalize(leaf, _release, leaf.shm.name, data_bytes + _STATE, worker_pid)
  return batch
