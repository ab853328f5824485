"""Spatio-temporal pooling of token grids: depthwise conv, average and max pooling.

Two formulations of the same operators, tested equal to each other (tests/models/test_pooling.py):

* ``"conv"``: `jax.lax.conv_general_dilated` with `feature_group_count` (depthwise) and `lax.reduce_window`.
* ``"slices"``: the padded input is split into stride phases (space-to-depth), after which every kernel tap is a
  contiguous slice; the output is the sum (or max) of the taps times per-channel weights. Their gradients are
  custom VJPs in the same style (transposed convolution by stride phase; max pooling through the forward's
  argmax), plain slices, pads and multiply-adds that XLA fuses. No library offers a faster depthwise 3-D conv for
  JAX, and on the CPU each piece pays: an MViT-B 16x4 train step at batch 2 takes 45.0 s with ``"conv"``, 12.5 s
  with the slices and autodiff's gradients (27 padded cotangents summed per pooling), 7.3-8.2 s with these VJPs;
  the forward at batch 1 4.29 s against 0.88-0.96 s (`python scripts/bench_model.py [--pool_impl conv]`, 2-core
  Intel VM, docs/performance.md). XLA's grouped-convolution backward is also reported slow on GPU (jax#13800,
  jax#26266).

``"auto"`` chooses per compile target (`lax.platform_dependent`): ``"conv"`` on TPU, where XLA's convolution
emitters are native and the slices' many small ops compile slowly, ``"slices"`` on the CPU and GPUs.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

Triple = tuple[int, int, int]


def _by_impl(impl: str, conv, slices, *args):
  """`conv(*args)` or `slices(*args)` as `impl` says; for "auto" as the platform being compiled for says."""
  if impl == "conv":
    return conv(*args)
  if impl == "slices":
    return slices(*args)
  return lax.platform_dependent(*args, tpu=conv, default=slices)


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


def _unsplit_phases(phases: dict, x: jax.Array, kernel: Triple, stride: Triple) -> jax.Array:
  """Transpose of `_phase_split` for a gradient given per stride phase: {(pt, ph, pw): (B, T'', H'', W'', *C)}."""
  sT, sH, sW = stride
  d_xp = jnp.stack([jnp.stack([jnp.stack([phases[(pt, ph, pw)] for pw in range(sW)], axis=4)
                               for ph in range(sH)], axis=3) for pt in range(sT)], axis=2)
  _, unsplit = jax.vjp(lambda x: _phase_split(x, kernel, stride, tuple(k // 2 for k in kernel), 0)[0], x)
  return unsplit(d_xp)[0]


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
  return _by_impl(impl, lambda x, k: _depthwise_xla_conv(x, k, stride), lambda x, k: _depthwise_slices(x, k, stride),
                  x, kernel)


def _depthwise_xla_conv(x: jax.Array, kernel: jax.Array, stride: Triple) -> jax.Array:
  """`depthwise_conv` as XLA's grouped convolution."""
  padding = tuple(k // 2 for k in kernel.shape[:3])
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


def _depthwise_slices_forward(x: jax.Array, kernel: jax.Array, stride: Triple) -> jax.Array:
  ksize = tuple(kernel.shape[:3])
  xp, out = _phase_split(x, ksize, stride, tuple(k // 2 for k in ksize), 0)
  kernel = kernel.astype(x.dtype)
  result = None
  for (dt, dh, dw), tap in _taps(xp, ksize, stride, out):
    term = tap * kernel[dt, dh, dw]
    result = term if result is None else result + term
  return result


_TAPS_PER_REDUCTION = 9


def _tap_sums(xp: jax.Array, ct: jax.Array, ksize: Triple, stride: Triple, out: Triple) -> jax.Array:
  """(kT * kH * kW, C) float32: for every kernel tap, the sum over (B, To, Ho, Wo, *G) of tap * ct.

  Nine taps per reduction (one variadic `lax.reduce`): XLA makes one pass over memory per reduction, and one
  reduction per tap would stream the cotangent and a tap slice k^3 times (docs/performance.md).
  """
  axes = tuple(range(ct.ndim - 1))
  products = [(tap * ct).astype(jnp.float32) for _, tap in _taps(xp, ksize, stride, out)]
  sums = []
  for i in range(0, len(products), _TAPS_PER_REDUCTION):
    group = tuple(products[i:i + _TAPS_PER_REDUCTION])
    sums += lax.reduce(group, (np.float32(0),) * len(group), lambda a, b: tuple(x + y for x, y in zip(a, b)), axes)
  return jnp.stack(sums)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise_slices(x: jax.Array, kernel: jax.Array, stride: Triple) -> jax.Array:
  return _depthwise_slices_forward(x, kernel, stride)


def _depthwise_slices_fwd(x, kernel, stride):
  return _depthwise_slices_forward(x, kernel, stride), (x, kernel)


def _depthwise_slices_bwd(stride, residuals, ct):
  """Gradients by slices too. Autodiff of the forward would transpose each of the k^3 tap slices into a pad of the
  cotangent to the full padded grid and sum them: k^3 bounds-checked passes over the input-sized array, a large
  share of the CPU train step (docs/performance.md). Here each stride phase of the padded input gathers only its
  own taps, as contiguous slices of one padded cotangent: the transposed convolution with the flipped kernel."""
  x, kernel = residuals
  ksize = tuple(kernel.shape[:3])
  padding = tuple(k // 2 for k in ksize)
  xp, out = _phase_split(x, ksize, stride, padding, 0)

  d_kernel = _tap_sums(xp, ct, ksize, stride, out).reshape(kernel.shape).astype(kernel.dtype)

  # Per grid axis: phase length L'' of the padded input, and Q = ceil(k / s) taps at most per phase.
  phase_len = tuple(xp.shape[1 + 2 * i] for i in range(3))
  max_taps = tuple(-(-k // s) for k, s in zip(ksize, stride))
  ct_pad = lax.pad(ct, jnp.zeros((), ct.dtype),
                   [(0, 0, 0)] + [(q - 1, l - o, 0) for q, l, o in zip(max_taps, phase_len, out)]
                   + [(0, 0, 0)] * (ct.ndim - 4))
  kernel = kernel.astype(ct.dtype)
  zeros = jnp.zeros((ct.shape[0], *phase_len, *ct.shape[4:]), ct.dtype)
  phases = {}
  for phase in itertools.product(*(range(s) for s in stride)):
    total = None
    # Tap d = q * s + p of this phase p, at offset q: d_xp[j] += ct[j - q] * kernel[d].
    for q in itertools.product(*(range(-(-(k - p) // s)) for k, p, s in zip(ksize, phase, stride))):
      start = [m - 1 - qi for m, qi in zip(max_taps, q)]
      index = (slice(None), *(slice(a, a + l) for a, l in zip(start, phase_len)))
      term = ct_pad[index] * kernel[tuple(qi * s + p for qi, s, p in zip(q, stride, phase))]
      total = term if total is None else total + term
    phases[phase] = zeros if total is None else total
  return _unsplit_phases(phases, x, ksize, stride), d_kernel


_depthwise_slices.defvjp(_depthwise_slices_fwd, _depthwise_slices_bwd)


def window_pool(x: jax.Array, window: Triple, stride: Triple, mode: str, impl: str = "auto") -> jax.Array:
  """Max or average pooling over (T, H, W) of x (B, T, H, W, *C), padding window // 2.

  Max pooling pads with -inf; average pooling counts padded zeros (PyTorch `count_include_pad=True`).
  """
  return _by_impl(impl, lambda x: _xla_window_pool(x, window, stride, mode),
                  lambda x: _window_pool_slices(x, window, stride, mode), x)


def _xla_window_pool(x: jax.Array, window: Triple, stride: Triple, mode: str) -> jax.Array:
  """`window_pool` as XLA's reduce_window."""
  extra = (1,) * (x.ndim - 4)
  dims, strides = (1, *window, *extra), (1, *stride, *extra)
  pads = [(0, 0)] + [(k // 2, k // 2) for k in window] + [(0, 0)] * len(extra)
  if mode == "max":
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)
  total = lax.reduce_window(x, 0.0, lax.add, dims, strides, pads)
  return total / (window[0] * window[1] * window[2])


def _window_pool_slices(x: jax.Array, window: Triple, stride: Triple, mode: str) -> jax.Array:
  if mode == "max":
    return _max_pool_slices(x, window, stride)
  xp, out = _phase_split(x, window, stride, tuple(k // 2 for k in window), 0)
  result = None
  for _, tap in _taps(xp, window, stride, out):
    result = tap if result is None else result + tap
  return result / (window[0] * window[1] * window[2])


def _max_pool_forward(x: jax.Array, window: Triple, stride: Triple) -> tuple[jax.Array, jax.Array]:
  """(max over the window, index of the first tap in scan order that holds it (int8))."""
  xp, out = _phase_split(x, window, stride, tuple(k // 2 for k in window), -jnp.inf)
  result = index = None
  for i, (_, tap) in enumerate(_taps(xp, window, stride, out)):
    if result is None:
      result, index = tap, jnp.zeros(tap.shape, jnp.int8)
    else:
      index = jnp.where(tap > result, jnp.int8(i), index)
      result = jnp.maximum(result, tap)
  return result, index


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_slices(x: jax.Array, window: Triple, stride: Triple) -> jax.Array:
  return _max_pool_forward(x, window, stride)[0]


def _max_pool_slices_fwd(x, window, stride):
  result, index = _max_pool_forward(x, window, stride)
  return result, (x, index)


def _max_pool_slices_bwd(window, stride, residuals, ct):
  """Routes each output's cotangent to the first tap (in scan order, as XLA's select-and-scatter) that holds the
  maximum, recorded by the forward. Autodiff of the max chain is slow on the CPU (docs/performance.md); here each
  stride phase sums only its own taps' contributions, padded from the output grid."""
  x, index = residuals
  out = index.shape[1:4]
  phase_len = tuple(o + (k - 1) // s for o, k, s in zip(out, window, stride))
  phases = {}
  zero = jnp.zeros((), ct.dtype)
  for i, d in enumerate(itertools.product(*(range(k) for k in window))):
    offsets = [di // s for di, s in zip(d, stride)]
    term = lax.pad(jnp.where(index == i, ct, zero), zero,
                   [(0, 0, 0)] + [(q, l - o - q, 0) for q, l, o in zip(offsets, phase_len, out)]
                   + [(0, 0, 0)] * (ct.ndim - 4))
    phase = tuple(di % s for di, s in zip(d, stride))
    phases[phase] = term if phase not in phases else phases[phase] + term
  empty = jnp.zeros((ct.shape[0], *phase_len, *ct.shape[4:]), ct.dtype)
  phases = {p: phases.get(p, empty) for p in itertools.product(*(range(s) for s in stride))}
  return (_unsplit_phases(phases, x, window, stride),)


_max_pool_slices.defvjp(_max_pool_slices_fwd, _max_pool_slices_bwd)
