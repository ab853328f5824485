"""mvit_jax.system.host_malloc: with the loader workers' settings a freed large block is reused without page
faults."""
import json
import platform
import subprocess
import sys

import pytest

# Allocates, touches and frees 64 MiB twice through libc, then prints the minor page faults of each round.
_FAULTS_OF_REUSE = r"""
import ctypes, json, resource, sys
from mvit_jax.system import host_malloc
applied = host_malloc.keep_large_blocks_in_heap() if sys.argv[1] == 'keep' else False
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
for _ in range(2):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'applied': applied, 'faults': faults}))
"""


def _faults_of_reuse(mode: str) -> dict:
  out = subprocess.run([sys.executable, '-c', _FAULTS_OF_REUSE, mode], capture_output=True, text=True, check=True)
  return json.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt settings exist only in glibc')
def test_large_blocks_are_reused_without_page_faults():
  system = _faults_of_reuse('system')
  keep = _faults_of_reuse('keep')
  assert keep['applied']
  pages = (64 << 20) // 4096
  # glibc's defaults serve a 64 MiB block by mmap and unmap it on free: touching it again faults every page (fewer
  # with transparent huge pages, still far more than a handful).
  assert system['faults'][1] > 100, system
  assert keep['faults'][0] > 100, keep  # The first touch faults either way: the test measures what it claims.
  assert keep['faults'][1] < 0.01 * pages, keep
