"""Lean-derivative ops equal the textbook formulas (flax nn.LayerNorm, nn.gelu, jax.nn.softmax) and their
autodiff gradients. (The memory they save is measured by scripts/bench_model.py, figures in docs/performance.md.)"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvit_jax.models import cpu
from mvit_jax.models import ops


def _grads(fn, *args):
  """Value and gradients of sum(fn(*args) * w) for a fixed random cotangent w."""
  out = fn(*args)
  w = jax.random.normal(jax.random.key(7), out.shape, jnp.float32)
  return out, jax.grad(lambda *a: (fn(*a).astype(jnp.float32) * w).sum(), argnums=tuple(range(len(args))))(*args)


def _assert_close(ours, ref, rtol):
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=rtol,
                               atol=rtol * float(np.abs(np.asarray(b, np.float32)).max()))


def test_softmax_and_gelu_match_jax():
  x = 3 * jax.random.normal(jax.random.key(0), (2, 5, 33), jnp.float32)
  _assert_close(_grads(ops.softmax, x), _grads(lambda v: jax.nn.softmax(v, axis=-1), x), 1e-5)
  _assert_close(_grads(ops.gelu, x), _grads(lambda v: nn.gelu(v, approximate=False), x), 1e-5)


def _softmax64(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.skipif(not cpu.kernels.available(), reason="compiled CPU kernels not built (no C++ compiler at install)")
@pytest.mark.parametrize("shape", [(3, 1), (2, 7), (4, 16), (2, 3, 17), (1, 2, 5, 393)])
def test_compiled_softmax_and_its_vjp_match_float64(shape):
  kx, kg = jax.random.split(jax.random.key(5))
  # Scores up to ~40 apart, and one row with a -200 outlier (below the kernel's exp clamp at -87.3).
  x = 8 * jax.random.normal(kx, shape, jnp.float32)
  x = x.at[(0,) * (len(shape) - 1) + (-1,)].set(-200.0)
  g = jax.random.normal(kg, shape, jnp.float32)
  p64 = _softmax64(x)
  np.testing.assert_allclose(jax.jit(cpu.kernels.softmax)(x), p64, rtol=2e-6, atol=1e-7)
  p32 = jnp.asarray(p64, jnp.float32)
  g64 = np.asarray(g, np.float64)
  dx64 = p64 * (g64 - (g64 * p64).sum(axis=-1, keepdims=True))
  np.testing.assert_allclose(jax.jit(cpu.kernels.softmax_vjp)(p32, g), dx64, rtol=1e-5, atol=1e-6)
  # ops.softmax runs them on the CPU, forward and backward.
  assert jax.jit(jax.grad(lambda v: (ops.softmax(v) * g).sum())).lower(x).as_text().count("mvit_softmax") == 2


@pytest.mark.skipif(not cpu.kernels.available(), reason="compiled CPU kernels not built (no C++ compiler at install)")
def test_compiled_softmax_propagates_nan_and_inf_like_jax():
  x = jnp.array([[0.0, np.nan, 1.0], [0.0, np.inf, 1.0], [1.0, 2.0, 3.0]], jnp.float32)
  got, want = np.asarray(jax.jit(cpu.kernels.softmax)(x)), np.asarray(jax.nn.softmax(x, axis=-1))
  assert np.isnan(got[0]).all() and np.isnan(got[1]).all() and np.isnan(want[0]).all() and np.isnan(want[1]).any()
  np.testing.assert_allclose(got[2], want[2], rtol=1e-6)


@pytest.mark.parametrize('dtype,rtol', [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_layer_norm_matches_flax(dtype, rtol):
  x = (2 + 3 * jax.random.normal(jax.random.key(1), (2, 7, 48))).astype(dtype)
  scale = 1 + 0.1 * jax.random.normal(jax.random.key(2), (48,))
  bias = 0.1 * jax.random.normal(jax.random.key(3), (48,))
  flax_ln = nn.LayerNorm(epsilon=1e-6, dtype=dtype)
  ref = lambda x, s, b: flax_ln.apply({'params': {'scale': s, 'bias': b}}, x)
  ours = lambda x, s, b: ops.layer_norm(x, s, b, 1e-6)
  assert ours(x, scale, bias).dtype == dtype
  _assert_close(_grads(ours, x, scale, bias), _grads(ref, x, scale, bias), rtol)


def test_unstack_qkv_matches_slicing():
  qkv = jax.random.normal(jax.random.key(4), (2, 9, 3, 2, 8))
  ours = lambda t: jnp.concatenate([a * (i + 1.5) for i, a in enumerate(ops.unstack_qkv(t))], -1)
  reference = lambda t: jnp.concatenate([t[:, :, i] * (i + 1.5) for i in range(3)], -1)
  _assert_close(_grads(ours, qkv), _grads(reference, qkv), 1e-6)


@pytest.mark.parametrize("shape", [(2, 7, 5, 12), (2, 7, 12, 5)])  # (B, L, K, N): cotangent wider, then narrower.
def test_matmul_matches_dot_and_its_gradients(shape):
  b, l, k, n = shape
  kx, kw = jax.random.split(jax.random.key(5))
  x, w = jax.random.normal(kx, (b, l, k)), jax.random.normal(kw, (k, n))
  np.testing.assert_allclose(cpu.matmul(x, w), jnp.dot(x, w), rtol=1e-6)
  ours = lambda x, w: jnp.sin(cpu.matmul(x, w))
  reference = lambda x, w: jnp.sin(jnp.dot(x, w))
  _assert_close(_grads(ours, x, w), _grads(reference, x, w), 1e-5)
  dense = lambda dot_general: nn.Dense(n, dot_general=dot_general)
  params = dense(None).init(jax.random.key(6), x)
  np.testing.assert_allclose(dense(cpu.dense_dot_general).apply(params, x), dense(None).apply(params, x), rtol=1e-6)
