"""Test setup (before jax is imported): 8 fake CPU devices for sharding tests, and LLVM optimisation off.

The suite compiles hundreds of small programs and runs each a few times: XLA's LLVM passes are most of that
compile time and buy speed the tests do not need (they check values, never timings). Test subprocesses inherit
both flags through the environment.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
