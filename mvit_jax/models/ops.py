"""Softmax, exact GELU and LayerNorm with hand-written derivatives that keep few, small residuals.

Autodiff of the
textbook formulas saves every intermediate for the backward pass: `jax.nn.softmax` (unless the global
`jax_softmax_custom_jvp` flag is set) keeps both exp(x - max) and the probabilities, erf-GELU keeps its erfc and
exp terms, flax's LayerNorm five full-size tensors. For MViT-B 16x4 at batch 2 that is gigabytes of extra memory
traffic per training step on a CPU (or GPU) whose step is bandwidth-bound. Here each op saves what PyTorch's
kernels save (softmax: its output; GELU: its input; LayerNorm: input, mean, 1/std) and recomputes the rest in the
backward pass. Forward values are the textbook ones, computed in float32 where the docstrings say.

Each pays (MViT-B 16x4, `python scripts/bench_model.py --modes train`, 2-core Intel VM, 2026-12-05,
docs/performance.md): the train step at batch 2 is 7.3-8.2 s with all three, 9.5 s with jax.nn.softmax, 8.7 s
with jax.nn.gelu, 9.2 s with flax's LayerNorm, 9.7-12.8 s with none; on TPU (`python -m mvit_jax.aot --topology
v5e:2x2 --per_chip_batch 8`, O0) they save 1.8 GiB of 10.5 GiB HBM per chip. (A hand-written q/k/v split gained
nothing and went.)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


@jax.custom_vjp
def softmax(x: jax.Array) -> jax.Array:
  """Softmax over the last axis; the backward pass needs only the output (as JAX's newer rule)."""
  unnormalized = jnp.exp(x - x.max(axis=-1, keepdims=True))
  return unnormalized / unnormalized.sum(axis=-1, keepdims=True)


def _softmax_fwd(x):
  y = softmax(x)
  return y, y


def _softmax_bwd(y, g):
  return ((y * (g - (y * g).sum(axis=-1, keepdims=True))).astype(y.dtype),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU x * Phi(x) (erf form, PyTorch's nn.GELU()); same dtype as x."""
  return (x * (jax.lax.erf(x * np.float32(1 / np.sqrt(2))) + 1) / 2).astype(x.dtype)


def _gelu_fwd(x):
  return gelu(x), x


def _gelu_bwd(x, g):
  xf = x.astype(jnp.float32)
  cdf = (jax.lax.erf(xf * np.float32(1 / np.sqrt(2))) + 1) / 2
  pdf = jnp.exp(-0.5 * xf * xf) * np.float32(1 / np.sqrt(2 * np.pi))
  return ((g.astype(jnp.float32) * (cdf + xf * pdf)).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def _moments(x: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
  """float32 mean and 1/sqrt(var + eps) over the last axis (two-pass variance), keepdims."""
  xf = x.astype(jnp.float32)
  mean = xf.mean(axis=-1, keepdims=True)
  return mean, jax.lax.rsqrt(jnp.square(xf - mean).mean(axis=-1, keepdims=True) + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """(x - mean) / sqrt(var + eps) * scale + bias over the last axis; statistics in float32, output in x.dtype."""
  return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
  mean, rstd = _moments(x, eps)
  y = ((x.astype(jnp.float32) - mean) * rstd * scale + bias).astype(x.dtype)
  return y, (x, mean, rstd, scale)


def _layer_norm_bwd(eps, residuals, g):
  del eps
  x, mean, rstd, scale = residuals
  x_hat = (x.astype(jnp.float32) - mean) * rstd
  g = g.astype(jnp.float32)
  reduce_axes = tuple(range(x.ndim - 1))
  d_scale = (g * x_hat).sum(axis=reduce_axes).astype(scale.dtype)
  d_bias = g.sum(axis=reduce_axes).astype(scale.dtype)  # Parameters share one dtype.
  g_hat = g * scale.astype(jnp.float32)
  dx = rstd * (g_hat - g_hat.mean(axis=-1, keepdims=True) - x_hat * (g_hat * x_hat).mean(axis=-1, keepdims=True))
  return dx.astype(x.dtype), d_scale, d_bias


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)
