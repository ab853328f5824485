"""mvit_jax.data.shm_batch: batches equal np.stack's, large leaves land in shared memory whose pages are in place."""
import os
import resource

from grain import multiprocessing as grain_mp
import numpy as np
import pytest

from mvit_jax.data import shm_batch


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
  pool.close()


def test_large_leaves_are_stacked_into_shared_memory(pool):
  del pool
  elements = _elements(frames=(8, 256, 256, 3))  # video 4.5 MiB per batch: pooled; label and note: stacked.
  for _ in range(3):  # The first block is made on demand, the next ones ahead.
    batch = shm_batch.stack(elements)
    _assert_stacked(batch, elements)
    assert isinstance(batch['video'], grain_mp.SharedMemoryArray)
    assert not isinstance(batch['label'], grain_mp.SharedMemoryArray)
    assert os.path.exists(f'/dev/shm/{batch["video"].shm.name}')
    batch['video'].shm.unlink()  # What grain's main process does once the batch is consumed.


def test_pooled_blocks_are_populated_before_they_are_written(pool):
  shape = (64, 256, 256, 3)  # 12 MiB = 3072 pages.
  pool.array(shape, np.uint8).shm.unlink()  # Starts the next block in the background.
  block = pool.array(shape, np.uint8)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block[...] = 7
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
  fresh = grain_mp.SharedMemoryArray(shape, np.uint8)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  fresh[...] = 7
  fresh_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
  block.shm.unlink()
  fresh.shm.unlink()
  assert fresh_faults > 1000  # Every page of a fresh block faults (this is what the pool saves).
  assert faults < fresh_faults / 10


def test_close_unlinks_the_blocks_made_ahead():
  pool = shm_batch._BlockPool(blocks_ahead=2)  # pylint: disable=protected-access
  pool.array((2, 1 << 20), np.uint8).shm.unlink()
  ahead = [future.result().name for pending in pool._pending.values() for future in pending]  # pylint: disable=protected-access
  assert len(ahead) == 2 and all(os.path.exists(f'/dev/shm/{name}') for name in ahead)
  pool.close()
  assert not any(os.path.exists(f'/dev/shm/{name}') for name in ahead)
