"""Test setup (before jax is imported): 8 fake CPU devices for sharding tests, and LLVM optimisation off.

The suite compiles hundreds of small programs and runs each a few times: XLA's LLVM passes are most of that
compile time and buy speed the tests do not need (they check values, never timings). Test subprocesses inherit
both flags through the environment.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# gcsfs reads this at import, whichever test imports it first: its bucket-type probe asks a control-plane API the
# GCS emulator does not serve (see tests/testlib.GcsServer).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import uuid  # pylint: disable=g-import-not-at-top,g-bad-import-order  (after the environment above)

import pytest  # pylint: disable=g-import-not-at-top,g-bad-import-order


@pytest.fixture(scope="session")
def gcs_server():
  """One in-memory fake-gcs-server per test process, stopped by its process id at the end."""
  from tests import testlib  # pylint: disable=g-import-not-at-top
  server = testlib.GcsServer().start()
  yield server
  server.stop()


@pytest.fixture
def bucket(gcs_server, monkeypatch):
  """A new empty bucket on the emulator, as 'gs://NAME', with this process's clients pointed at the emulator."""
  for key, value in gcs_server.env.items():
    monkeypatch.setenv(key, value)
  return gcs_server.create_bucket(f"test-{uuid.uuid4().hex[:16]}")
