"""mvit_jax.host_malloc: freed memory is reused without page faults once configured, and 'auto' follows the backend."""
import json
import platform
import subprocess
import sys

import pytest

from mvit_jax import host_malloc

# Allocates, touches and frees 256 MiB twice through libc, then prints the minor page faults of the second round.
_FAULTS_OF_REUSE = r"""
import ctypes, json, resource, sys
from mvit_jax import host_malloc
applied = host_malloc.configure(sys.argv[1])
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20
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


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt settings exist only in glibc')
def test_keep_reuses_freed_memory_without_page_faults():
  system = _faults_of_reuse('system')
  keep = _faults_of_reuse('keep')
  assert not system['applied'] and keep['applied']
  pages = (256 << 20) // 4096
  # glibc's defaults give a 256 MiB block back to the OS on free: touching it again faults every page (fewer with
  # transparent huge pages, still far more than a handful).
  assert system['faults'][1] > 100, system
  assert keep['faults'][0] > 100, keep  # The first touch faults either way: the test measures what it claims.
  assert keep['faults'][1] < 0.01 * pages, keep


def test_auto_follows_jax_platforms(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda,cpu')
  assert not host_malloc.jax_will_run_on_cpu()
  assert not host_malloc.configure('auto')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert host_malloc.jax_will_run_on_cpu()


def test_unknown_mode_is_an_error():
  with pytest.raises(ValueError, match='fast'):
    host_malloc.configure('fast')
