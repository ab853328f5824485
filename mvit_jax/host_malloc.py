"""Host malloc settings for CPU training: keep freed memory for reuse instead of giving it back to the OS.

XLA's CPU runtime allocates a step's temporaries afresh every step (gigabytes for MViT-B 16x4 at batch 2) and frees
them at its end. glibc serves blocks that large with fresh mmaps (per-thread arenas fall back to mmap whatever
M_MMAP_MAX says) and unmaps them on free, so every step page-faults and zeroes gigabytes again, a large part of the
step's time (docs/performance.md); one arena, no mmap and no trimming keep the memory mapped. An allocator such as
tcmalloc fixes the same thing but must be LD_PRELOADed before the process starts; glibc's own `mallopt` does it
from Python. No library wraps this, hence ctypes.

The settings must be made before JAX creates its CPU client (its threads take their own arenas on first use):
call `configure` first thing in a process.
"""
import ctypes
import importlib.metadata
import importlib.util
import os
import platform

# <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
M_ARENA_MAX = -8

MODES = ('auto', 'keep', 'system')


def jax_will_run_on_cpu() -> bool:
  """True when JAX's default backend will be the CPU, decided without initialising JAX.

  JAX_PLATFORMS names the backend when set; otherwise an installed PJRT plugin (CUDA, ROCm) or libtpu means an
  accelerator.
  """
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  if importlib.metadata.entry_points(group='jax_plugins') or importlib.util.find_spec('jax_plugins'):
    return False
  return importlib.util.find_spec('libtpu') is None


def mallopt(settings: dict[int, int]) -> bool:
  """Applies glibc `mallopt(param, value)` for each item; True when all were accepted, False without glibc."""
  if platform.libc_ver()[0] != 'glibc':
    return False
  libc = ctypes.CDLL(None)
  return all([libc.mallopt(param, value) == 1 for param, value in settings.items()])


def keep_freed_memory() -> bool:
  """One malloc arena, no mmap-served blocks, no trimming: freed memory stays in the process for reuse.

  The process's resident size then stays at its peak. Returns False (and changes nothing) where the C library is
  not glibc.
  """
  return mallopt({M_ARENA_MAX: 1, M_MMAP_MAX: 0, M_TRIM_THRESHOLD: -1, M_TOP_PAD: 256 << 20})  # -1: never trim.


def configure(mode: str = 'auto') -> bool:
  """Applies `mode`: 'keep' always, 'auto' when JAX will run on the CPU, 'system' never. True when applied."""
  if mode not in MODES:
    raise ValueError(f'host malloc mode {mode!r} is not one of {MODES}')
  if mode == 'keep' or (mode == 'auto' and jax_will_run_on_cpu()):
    return keep_freed_memory()
  return False
