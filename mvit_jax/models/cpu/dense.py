"""The dense layers' matmul with the weight gradient oriented for XLA's CPU dots."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x (..., K) @ kernel (K, N). The weight gradient x^T g contracts the token axes, the major axes of both
  operands, and XLA's CPU backend copies one operand into contraction-minor layout for it: autodiff's x^T g copies
  the cotangent g, the wider operand for fc1, qkv and widening projections (4x / 3x / 2x the bytes of x). In a
  program compiled for the CPU the product is oriented so that the narrower operand is the one copied; elsewhere
  it is autodiff's product."""
  return jnp.dot(x, kernel)


def _matmul_fwd(x, kernel):
  return jnp.dot(x, kernel), (x, kernel)


def _weight_grad(x: jax.Array, g: jax.Array) -> jax.Array:
  """x^T g over every leading axis: (..., K), (..., N) -> (K, N), as autodiff forms it."""
  leading = tuple(range(x.ndim - 1))
  return jax.lax.dot_general(x, g, ((leading, leading), ((), ())))


def _cpu_weight_grad(x: jax.Array, g: jax.Array) -> jax.Array:
  k, n = x.shape[-1], g.shape[-1]
  x2, g2 = x.reshape(-1, k), g.reshape(-1, n)
  rows = (((0,), (0,)), ((), ()))
  return jax.lax.dot_general(g2, x2, rows).T if n > k else jax.lax.dot_general(x2, g2, rows)


def _matmul_bwd(residuals, g):
  x, kernel = residuals
  d_kernel = jax.lax.platform_dependent(x, g, cpu=_cpu_weight_grad, default=_weight_grad)
  return jnp.dot(g, kernel.T), d_kernel.astype(kernel.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dense_dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
  """`lax.dot_general` for `flax.linen.Dense` that contracts x's last axis with the kernel's first by `matmul`."""
  if dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())) or precision is not None or preferred_element_type:
    return jax.lax.dot_general(x, kernel, dimension_numbers, precision, preferred_element_type)
  return matmul(x, kernel)
