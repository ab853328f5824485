"""Builds the optional compiled CPU kernels (mvit_jax/models/csrc, see mvit_jax/models/cpu_kernels.py).

Everything else is declared in setup.cfg. The kernels include XLA's FFI headers, which jaxlib ships (a build
requirement in pyproject.toml). Without a C++ compiler the build of the extension fails, setuptools goes on
(`optional=True`) and mvit_jax uses its XLA formulations instead.
"""

import os

from setuptools import Extension, setup


def _ffi_include_dir() -> str:
  import jaxlib  # pylint: disable=import-outside-toplevel

  return os.path.join(os.path.dirname(jaxlib.__file__), "include")


setup(ext_modules=[
    Extension(
        "mvit_jax.models._cpu_kernels",
        sources=["mvit_jax/models/csrc/depthwise_kernel_grad.cc"],
        include_dirs=[_ffi_include_dir()],
        extra_compile_args=["-O3", "-std=c++17"],
        language="c++",
        optional=True,
    )
])
