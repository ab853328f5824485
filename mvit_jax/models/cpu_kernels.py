"""Compiled CPU kernels, called from jitted code as XLA FFI custom calls (`csrc/`, built by `pip install`).

Only where XLA's CPU code generation is far from what the hardware does (measured in docs/benchmarks.md):

* `depthwise_kernel_grad`: the kernel gradient of the depthwise 3-D convolution (conv pooling). XLA emits the
  27-taps-by-channels reduction as scalar loops over strided slices: 93 ms for MViT-B's stage-2 Q pooling at batch
  2 on a 2-core Xeon, against 8 ms here (and 15 ms for XLA's whole forward convolution).

The library is optional: without a C++ compiler at install time it is not built, `available()` is False and
callers use their XLA formulation. On other platforms than the CPU callers lower their XLA formulation too
(`jax.lax.platform_dependent`).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np

_TARGET = "mvit_depthwise_kernel_grad"


@functools.cache
def available() -> bool:
  """Whether the compiled library was built and its FFI targets are registered for the CPU."""
  paths = glob.glob(os.path.join(os.path.dirname(__file__), "_cpu_kernels*.so"))
  if not paths:
    return False
  library = ctypes.cdll.LoadLibrary(paths[0])
  jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(library.MvitDepthwiseKernelGrad), platform="cpu")
  return True


def depthwise_kernel_grad(x: jax.Array, ct: jax.Array, kernel_size: tuple[int, int, int],
                          stride: tuple[int, int, int]) -> jax.Array:
  """Kernel gradient (kT, kH, kW, C) float32 of the depthwise conv with padding kernel // 2 (CPU only).

  Args:
    x: (B, T, H, W, *G, C) float32 input of the convolution (group axes G share the kernel).
    ct: (B, To, Ho, Wo, *G, C) float32 cotangent of its output.
  """
  b, t, h, w = x.shape[:4]
  channels = x.shape[-1]
  out = jax.ShapeDtypeStruct((*kernel_size, channels), jnp.float32)
  call = jax.ffi.ffi_call(_TARGET, out, vmap_method="sequential")
  return call(x.reshape(b, t, h, w, -1, channels), ct.reshape(*ct.shape[:4], -1, channels),
              kernel=np.asarray(kernel_size, np.int64), stride=np.asarray(stride, np.int64))
