"""mvit_jax.data.shm_batch: batches equal np.stack's; large leaves land in pooled shared memory whose pages are in
place, which comes back to the worker once the main process drops the batch (tests/data/test_pipeline.py checks
this through real workers)."""
import collections
import ctypes
import ctypes.util
import mmap
import multiprocessing
from multiprocessing import shared_memory
import os
import resource
import sys
import threading

from grain import multiprocessing as grain_mp
import numpy as np
import pytest

from mvit_jax.data import shm_batch

_LIBC = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)


def _elements(n=3, frames=(8, 64, 64, 3)):
  rng = np.random.default_rng(0)
  return [{'video': rng.integers(0, 256, frames, dtype=np.uint8), 'label': np.int32(i), 'note': f'clip {i}'}
          for i in range(n)]


def _assert_stacked(batch, elements):
  assert set(batch) == set(elements[0])
  for key in batch:
    np.testing.assert_array_equal(batch[key], np.stack([e[key] for e in elements]))


def test_without_pool_it_is_plain_stacking():
  elements = _elements()
  batch = shm_batch.stack(elements)
  _assert_stacked(batch, elements)
  assert not isinstance(batch['video'], grain_mp.SharedMemoryArray)


@pytest.fixture
def pool(monkeypatch):
  pool = shm_batch._BlockPool()  # pylint: disable=protected-access
  monkeypatch.setattr(shm_batch, '_POOL', pool)
  yield pool
  _close_and_unlink_all(pool)


def _close_and_unlink_all(pool):
  """pool.close() leaves blocks in use to the main process; here the test is that process."""
  in_use = [shm.name for blocks in pool._handed_out.values() for shm in blocks]  # pylint: disable=protected-access
  pool.close()
  for name in in_use:
    try:
      shared_memory.SharedMemory(name).unlink()
    except FileNotFoundError:
      pass


def test_large_leaves_are_stacked_into_shared_memory(pool):
  del pool
  elements = _elements(frames=(8, 256, 256, 3))  # video 4.5 MiB per batch: pooled; label and note: stacked.
  for _ in range(3):  # The first block is made on demand, the next ones ahead.
    batch = shm_batch.stack(elements)
    _assert_stacked(batch, elements)
    assert isinstance(batch['video'], grain_mp.SharedMemoryArray)
    assert not isinstance(batch['label'], grain_mp.SharedMemoryArray)
    assert os.path.exists(f'/dev/shm/{batch["video"].shm.name}')


def _resident_pages(shm: shared_memory.SharedMemory, nbytes: int) -> int:
  """How many of the first `nbytes` bytes' pages of `shm` the kernel has allocated (mincore(2))."""
  pages = -(-nbytes // mmap.PAGESIZE)
  window = (ctypes.c_char * nbytes).from_buffer(shm.buf)
  try:
    vec = (ctypes.c_ubyte * pages)()
    assert _LIBC.mincore(ctypes.c_void_p(ctypes.addressof(window)), ctypes.c_size_t(nbytes), vec) == 0
  finally:
    del window
  return sum(v & 1 for v in vec)


def test_pooled_blocks_are_populated_before_they_are_written(pool):
  shape = (64, 256, 256, 3)  # 12 MiB = 3072 pages.
  nbytes = int(np.prod(shape))
  pool.array(shape, np.uint8)  # Starts the next block in the background.
  block = pool.array(shape, np.uint8)
  fresh = grain_mp.SharedMemoryArray(shape, np.uint8)
  try:
    # Page residency, not page faults: under memory pressure the kernel may unmap (migrate) allocated pages, and
    # touching them again is a cheap minor fault; what the pool saves is allocating (and zeroing) them.
    assert _resident_pages(block.shm, nbytes) == -(-nbytes // mmap.PAGESIZE)
    assert _resident_pages(fresh.shm, nbytes) == 0  # A fresh block gets its pages when first written.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fresh[...] = 7
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before > 1000
  finally:
    fresh.shm.unlink()


def _main_process_view(worker_array):
  """What grain's main process makes of a worker's SharedMemoryArray, then our map after mp_prefetch."""
  array = grain_mp.SharedMemoryArray.from_metadata(worker_array.metadata)
  array.unlink_on_del()
  return shm_batch.recycle_when_dropped({'video': array})['video']


def test_a_block_is_reused_only_after_the_main_process_drops_its_batch(pool):
  shape = (2, 1 << 20)
  first = pool.array(shape, np.uint8)
  seen = _main_process_view(first)
  second = pool.array(shape, np.uint8)
  assert second.shm.name != first.shm.name  # `seen` is alive.
  seen[...] = 1
  del seen  # Garbage in the main process: the block is free again, and not unlinked.
  assert os.path.exists(f'/dev/shm/{first.shm.name}')
  assert pool.array(shape, np.uint8).shm.name == first.shm.name


def test_blocks_grain_unlinks_are_forgotten(pool):
  shape = (2, 1 << 20)
  first = pool.array(shape, np.uint8)
  grain_mp.SharedMemoryArray.from_metadata(first.metadata).shm.unlink()  # A batch grain dropped (close, set_state).
  assert not os.path.exists(f'/dev/shm/{first.shm.name}')
  assert pool.array(shape, np.uint8).shm.name != first.shm.name


def test_a_batch_the_worker_drops_unsent_frees_its_block(pool):
  shape = (2, 1 << 20)
  dropped = pool.array(shape, np.uint8)  # Read ahead, then discarded by the worker's close() or set_state().
  name = dropped.shm.name
  del dropped
  assert pool.array(shape, np.uint8).shm.name == name


@pytest.mark.slow
def test_close_unlinks_every_block_but_those_sent_which_the_main_process_unlinks():
  pool = shm_batch._BlockPool(blocks_ahead=2)  # pylint: disable=protected-access
  shape = (2, 1 << 20)
  unsent = pool.array(shape, np.uint8)  # In the worker's read-ahead: never reaches the main process.
  freed = pool.array(shape, np.uint8)
  sent = pool.array(shape, np.uint8)
  seen, in_main = _main_process_view(freed), _main_process_view(sent)  # in_main: still used by the main process.
  del seen
  spare = [future.result().name for pending in pool._pending.values() for future in pending]  # pylint: disable=protected-access
  assert len(spare) == 2
  pool.close()
  gone = spare + [unsent.shm.name, freed.shm.name]
  assert not any(os.path.exists(f'/dev/shm/{name}') for name in gone)
  assert os.path.exists(f'/dev/shm/{sent.shm.name}')
  in_main[...] = 1  # Still mapped and writable.
  del in_main  # The worker has let go of it: the main process unlinks it.
  assert not os.path.exists(f'/dev/shm/{sent.shm.name}')


@pytest.mark.slow
def test_unlink_all_unlinks_spare_free_and_in_use_blocks():
  pool = shm_batch._BlockPool(blocks_ahead=2)  # pylint: disable=protected-access
  shape = (2, 1 << 20)
  in_use = pool.array(shape, np.uint8)
  freed = pool.array(shape, np.uint8)
  seen = _main_process_view(freed)
  del seen
  pending = pool._pending.values()  # pylint: disable=protected-access
  spare = [future.result().name for futures_of_size in pending for future in futures_of_size]
  names = spare + [freed.shm.name, in_use.shm.name]
  assert len(names) == 4 and all(os.path.exists(f'/dev/shm/{name}') for name in names)
  pool.unlink_all()  # The main process is gone: nobody else would unlink the block it was using.
  assert not any(os.path.exists(f'/dev/shm/{name}') for name in names)
  pool.close()


@pytest.mark.slow
def test_main_process_unlinks_blocks_of_a_worker_that_has_exited(monkeypatch):
  dead = multiprocessing.get_context('spawn').Process(target=int)
  dead.start()
  dead.join()
  monkeypatch.setattr(shm_batch.os, 'getpid', lambda: dead.pid)
  pool = shm_batch._BlockPool()  # pylint: disable=protected-access
  block = pool.array((2, 1 << 20), np.uint8)
  name = block.shm.name
  seen = _main_process_view(block)
  del seen
  assert not os.path.exists(f'/dev/shm/{name}')
  monkeypatch.undo()
  _close_and_unlink_all(pool)


def test_batches_built_at_once_by_read_threads_get_blocks_of_their_own(monkeypatch):
  """Read threads build batches concurrently into a worker's pooled shared memory: no two batches held at the same
  time may share a block (threads switch every microsecond here, to meet the race that lets them)."""
  pool = shm_batch._BlockPool()  # pylint: disable=protected-access
  monkeypatch.setattr(shm_batch, '_POOL', pool)
  interval, holders, shared, lock = sys.getswitchinterval(), collections.Counter(), [], threading.Lock()

  def build_batches():
    for _ in range(1000):
      batch = shm_batch.stack([{'video': np.zeros(shm_batch.MIN_POOLED_BYTES, np.uint8)}])
      name = batch['video'].shm.name
      with lock:
        holders[name] += 1
        if holders[name] > 1:
          shared.append(name)
      with lock:
        holders[name] -= 1
      del batch  # Frees its block for the next batch.

  sys.setswitchinterval(1e-6)
  try:
    threads = [threading.Thread(target=build_batches) for _ in range(16)]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
  finally:
    sys.setswitchinterval(interval)
    pool.close()
  assert not shared
