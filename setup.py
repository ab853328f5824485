"""Builds the optional compiled CPU kernels (mvit_jax/models/cpu/csrc, see mvit_jax/models/cpu).

Everything else is declared in setup.cfg. The kernels include XLA's FFI headers, which jaxlib ships (a build
requirement in pyproject.toml). Without a C++ compiler the build of the extension fails, setuptools goes on
(`optional=True`) and mvit_jax uses its XLA formulations instead.
"""

import os

from setuptools import Extension, setup


def _extensions() -> list[Extension]:
  try:
    import jaxlib  # pylint: disable=import-outside-toplevel
  except ImportError:  # A build without isolation and without jaxlib: no compiled kernels.
    return []
  return [
      Extension(
          "mvit_jax.models.cpu._kernels",
          sources=["mvit_jax/models/cpu/csrc/depthwise_kernel_grad.cc", "mvit_jax/models/cpu/csrc/softmax.cc"],
          depends=["mvit_jax/models/cpu/csrc/cpu_parallel.h"],
          include_dirs=[os.path.join(os.path.dirname(jaxlib.__file__), "include")],
          extra_compile_args=["-O3", "-std=c++17"],
          language="c++",
          optional=True,
      )
  ]


setup(ext_modules=_extensions())
