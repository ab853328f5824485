"""glibc malloc settings for the loader workers: large freed blocks stay in the heap for reuse.

Every decoded frame (~260 KB) and batch (~40 MB) is larger than glibc's mmap threshold, so by default each one is a
fresh mmap whose pages fault in on first touch and go back to the OS on free. With the thresholds raised
(`keep_large_blocks_in_heap`), two loader workers deliver 11% more clips/s (151 against 136 clips/s, 13.1 against
14.7 ms of CPU per clip; `python scripts/bench_data.py --clips 160 --workers 2`, docs/performance.md). No library
wraps mallopt, hence ctypes. The trainer's own process keeps glibc's defaults: the same for XLA's temporaries
bought under 4% of a CPU train step.
"""
import ctypes
import platform

# <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def mallopt(settings: dict[int, int]) -> bool:
  """Applies glibc `mallopt(param, value)` for each item; True when all were accepted, False without glibc."""
  if platform.libc_ver()[0] != 'glibc':
    return False
  libc = ctypes.CDLL(None)
  return all([libc.mallopt(param, value) == 1 for param, value in settings.items()])


def keep_large_blocks_in_heap() -> bool:
  """Blocks up to 256 MiB come from the heap, and up to 1 GiB of freed heap stays mapped; False without glibc."""
  return mallopt({M_MMAP_THRESHOLD: 256 << 20, M_TRIM_THRESHOLD: 1 << 30})
