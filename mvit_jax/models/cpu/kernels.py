"""The compiled CPU kernels (`csrc/`, built by `pip install` as `_kernels*.so`), called from jitted code as XLA FFI
custom calls. Call them through `mvit_jax.models.cpu.on_cpu`, which lowers them only for the CPU."""

from __future__ import annotations

import ctypes
import functools
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np

# FFI target name -> the library's handler symbol.
_TARGETS = {
    "mvit_depthwise_kernel_grad": "MvitDepthwiseKernelGrad",
    "mvit_softmax": "MvitSoftmax",
    "mvit_softmax_vjp": "MvitSoftmaxVjp",
}


@functools.cache
def available() -> bool:
  """Whether the compiled library was built and its FFI targets are registered for the CPU."""
  paths = glob.glob(os.path.join(os.path.dirname(__file__), "_kernels*.so"))
  if not paths:
    return False
  library = ctypes.cdll.LoadLibrary(paths[0])
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
  return True


def usable(*arrays: jax.Array) -> bool:
  """Whether the kernels were built and take these arrays (they are float32 only)."""
  return available() and all(a.dtype == jnp.float32 for a in arrays)


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
  call = jax.ffi.ffi_call("mvit_depthwise_kernel_grad", out, vmap_method="sequential")
  return call(x.reshape(b, t, h, w, -1, channels), ct.reshape(*ct.shape[:4], -1, channels),
              kernel=np.asarray(kernel_size, np.int64), stride=np.asarray(stride, np.int64))


def softmax(x: jax.Array) -> jax.Array:
  """Softmax over the last axis of a float32 array (CPU only)."""
  return jax.ffi.ffi_call("mvit_softmax", jax.ShapeDtypeStruct(x.shape, jnp.float32), vmap_method="expand_dims")(x)


def softmax_vjp(probs: jax.Array, ct: jax.Array) -> jax.Array:
  """probs * (ct - sum(ct * probs, -1)): the softmax's input cotangent from its float32 output and cotangent."""
  out = jax.ShapeDtypeStruct(probs.shape, jnp.float32)
  return jax.ffi.ffi_call("mvit_softmax_vjp", out, vmap_method="expand_dims")(probs, ct)
