"""The pooling formulations ('slices' and 'conv') compute the same function, forward and backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvit_jax.models import pooling

CASES = [
    # (grid T, H, W), kernel, stride
    ((3, 7, 7), (3, 3, 3), (1, 1, 1)),
    ((3, 8, 8), (3, 3, 3), (1, 2, 2)),
    ((2, 16, 16), (3, 3, 3), (1, 8, 8)),
    ((5, 15, 13), (3, 3, 3), (2, 4, 4)),
    ((1, 7, 7), (1, 3, 3), (1, 2, 2)),
    ((2, 17, 17), (1, 9, 9), (1, 8, 8)),
    ((2, 9, 9), (1, 5, 5), (1, 4, 4)),
]


@pytest.mark.parametrize("grid,kernel,stride", CASES)
def test_depthwise_conv_formulations_agree(grid, kernel, stride):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (1, *grid, 2, 4))  # (B, T, H, W, heads, head_dim)
  w = jax.random.normal(kw, (*kernel, 4))
  conv = jax.jit(pooling.depthwise_conv, static_argnums=(2, 3))
  out = {impl: conv(x, w, stride, impl) for impl in ("slices", "conv")}
  expected = tuple((n + 2 * (k // 2) - k) // s + 1 for n, k, s in zip(grid, kernel, stride))
  assert out["slices"].shape == (1, *expected, 2, 4)
  np.testing.assert_allclose(out["slices"], out["conv"], rtol=1e-5, atol=1e-5)

  def loss(impl, x, w):
    return jnp.sum(jnp.sin(pooling.depthwise_conv(x, w, stride, impl)))

  grad = jax.jit(jax.grad(loss, argnums=(1, 2)), static_argnums=0)
  grads = {impl: grad(impl, x, w) for impl in ("slices", "conv")}
  for a, b in zip(grads["slices"], grads["conv"]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_depthwise_conv_matches_hand_computed_value():
  x = jnp.arange(5.0).reshape(1, 1, 1, 5, 1)  # one row 0..4 along W
  w = jnp.array([1.0, 10.0, 100.0]).reshape(1, 1, 3, 1)
  out = pooling.depthwise_conv(x, w, (1, 1, 2), "slices")
  # Padding 1: windows [pad,0,1], [1,2,3], [3,4,pad] at stride 2.
  np.testing.assert_allclose(out.ravel(), [0 * 10 + 1 * 100, 1 + 20 + 300, 3 + 40])


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("grid,kernel,stride", CASES[:4])
def test_window_pool_formulations_agree(mode, grid, kernel, stride):
  x = jax.random.normal(jax.random.key(1), (1, *grid, 3))
  a = pooling.window_pool(x, kernel, stride, mode, "slices")
  b = pooling.window_pool(x, kernel, stride, mode, "conv")
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  ga = jax.jit(jax.grad(lambda x: jnp.sum(pooling.window_pool(x, kernel, stride, mode, "slices") ** 2)))(x)
  gb = jax.jit(jax.grad(lambda x: jnp.sum(pooling.window_pool(x, kernel, stride, mode, "conv") ** 2)))(x)
  np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-5)


def test_max_pool_ignores_padding():
  x = -jnp.ones((1, 1, 3, 3, 1))
  out = pooling.window_pool(x, (1, 3, 3), (1, 2, 2), "max", "slices")
  np.testing.assert_array_equal(out, -jnp.ones((1, 1, 2, 2, 1)))  # padding is -inf, not 0


@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2), (2, 2, 2)])
def test_max_pool_gradient_with_ties_goes_to_the_first_maximum(stride):
  # Repeated frames (videos shorter than the clip are padded by repeating frames) tie across time: the gradient
  # must go to one tap only, the first in scan order, as XLA's select-and-scatter (the 'conv' formulation) does.
  frame = jax.random.normal(jax.random.key(2), (1, 1, 6, 6, 3))
  x = jnp.concatenate([frame, frame, frame, jnp.round(frame)], axis=1)
  ga = jax.grad(lambda x: jnp.sum(jnp.cos(pooling.window_pool(x, (3, 3, 3), stride, "max", "slices"))))(x)
  gb = jax.grad(lambda x: jnp.sum(jnp.cos(pooling.window_pool(x, (3, 3, 3), stride, "max", "conv"))))(x)
  np.testing.assert_allclose(ga, gb, rtol=1e-6, atol=1e-6)
  out = pooling.window_pool(x, (3, 3, 3), stride, "max", "slices")
  total = jax.grad(lambda x: jnp.sum(pooling.window_pool(x, (3, 3, 3), stride, "max", "slices")))(x)
  assert float(jnp.sum(total)) == out.size  # each output's cotangent lands exactly once
