"""Spatio-temporal pooling of token grids: depthwise conv, average and max pooling.

Two formulations of the same operators, tested equal to each other (tests/test_pooling.py):

* ``"conv"``: `jax.lax.conv_general_dilated` with `feature_group_count` (depthwise) and `lax.reduce_window`.
* ``"slices"``: the padded input is split into stride phases (space-to-depth), after which every kernel tap is a
  contiguous slice; the output is the sum (or max) of the taps times per-channel weights. Forward and backward
  are then plain slices, pads and multiply-adds that XLA fuses. Written by hand because XLA's grouped
  convolution is 34-240x slower on CPU (measured, ../shared/reference/performance.md §6) and its backward is
  reported slow on GPU (jax#13800, jax#26266); no library offers a faster depthwise 3-D conv for JAX.

``"auto"`` picks ``"slices"`` on CPU and GPU and ``"conv"`` on TPU (where XLA's native convolution emitter is
the better-supported path; not measured here).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from jax import lax

Triple = tuple[int, int, int]


def resolve_impl(impl: str) -> str:
  if impl != "auto":
    return impl
  return "conv" if jax.default_backend() == "tpu" else "slices"


def _phase_split(x: jax.Array, kernel: Triple, stride: Triple, padding: Triple, pad_value) -> tuple[jax.Array, Triple]:
  """Pads x (B, T, H, W, *C) and splits each grid axis n into (n // s, s).

  Returns the array of shape (B, T'', sT, H'', sH, W'', sW, *C) and the output grid (To, Ho, Wo).
  """
  grid = x.shape[1:4]
  out = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(grid, kernel, stride, padding))
  # Padded length: enough rows for every tap of every output, rounded to a multiple of the stride.
  lengths = tuple((o + (k - 1) // s) * s for o, k, s in zip(out, kernel, stride))
  pads = [(0, 0, 0)] + [(p, l - n - p, 0) for n, p, l in zip(grid, padding, lengths)]
  pads += [(0, 0, 0)] * (x.ndim - 4)
  x = lax.pad(x, jnp.asarray(pad_value, x.dtype), pads)  # Negative high padding crops unused rows.
  shape = [x.shape[0]]
  for l, s in zip(lengths, stride):
    shape += [l // s, s]
  return x.reshape(shape + list(x.shape[4:])), out


def _taps(xp: jax.Array, kernel: Triple, stride: Triple, out: Triple):
  """Yields ((dt, dh, dw), tap) with tap (B, To, Ho, Wo, *C) = x_pad[b, t*st+dt, h*sh+dh, w*sw+dw]."""
  for offsets in itertools.product(*(range(k) for k in kernel)):
    index = [slice(None)]
    for d, s, o in zip(offsets, stride, out):
      index += [slice(d // s, d // s + o), d % s]
    yield offsets, xp[tuple(index)]


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: Triple, impl: str = "auto") -> jax.Array:
  """Depthwise 3-D convolution, no bias, padding kernel // 2 on each side.

  Args:
    x: (B, T, H, W, *G, C): any extra group axes G (e.g. heads) share the kernel.
    kernel: (kT, kH, kW, C) per-channel weights.
    stride: (sT, sH, sW).
  Returns:
    (B, To, Ho, Wo, *G, C) with floor-mode output sizes.
  """
  ksize = tuple(kernel.shape[:3])
  padding = tuple(k // 2 for k in ksize)
  if resolve_impl(impl) == "conv":
    lead, channels = x.shape[:4], x.shape[-1]
    groups = x.shape[4:-1]
    # Fold group axes into the batch: (B, *G, T, H, W, C).
    perm = (0, *range(4, x.ndim - 1), 1, 2, 3, x.ndim - 1)
    xb = jnp.transpose(x, perm).reshape((-1, *lead[1:], channels))
    y = lax.conv_general_dilated(
        xb,
        kernel[:, :, :, None, :].astype(x.dtype),
        window_strides=stride,
        padding=[(p, p) for p in padding],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        feature_group_count=channels,
    )
    y = y.reshape((lead[0], *groups, *y.shape[1:]))
    inv = (0, 1 + len(groups), 2 + len(groups), 3 + len(groups), *range(1, 1 + len(groups)), y.ndim - 1)
    return jnp.transpose(y, inv)
  xp, out = _phase_split(x, ksize, stride, padding, 0)
  kernel = kernel.astype(x.dtype)
  result = None
  for (dt, dh, dw), tap in _taps(xp, ksize, stride, out):
    term = tap * kernel[dt, dh, dw]
    result = term if result is None else result + term
  return result


def window_pool(x: jax.Array, window: Triple, stride: Triple, mode: str, impl: str = "auto") -> jax.Array:
  """Max or average pooling over (T, H, W) of x (B, T, H, W, *C), padding window // 2.

  Max pooling pads with -inf; average pooling counts padded zeros (PyTorch `count_include_pad=True`).
  """
  padding = tuple(k // 2 for k in window)
  if resolve_impl(impl) == "conv":
    extra = (1,) * (x.ndim - 4)
    dims, strides = (1, *window, *extra), (1, *stride, *extra)
    pads = [(0, 0)] + [(p, p) for p in padding] + [(0, 0)] * len(extra)
    if mode == "max":
      return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)
    total = lax.reduce_window(x, 0.0, lax.add, dims, strides, pads)
    return total / (window[0] * window[1] * window[2])
  pad_value = -jnp.inf if mode == "max" else 0
  xp, out = _phase_split(x, window, stride, padding, pad_value)
  result = None
  for _, tap in _taps(xp, window, stride, out):
    if result is None:
      result = tap
    else:
      result = jnp.maximum(result, tap) if mode == "max" else result + tap
  if mode == "avg":
    result = result / (window[0] * window[1] * window[2])
  return result
