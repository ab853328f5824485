"""Lean-derivative ops equal the textbook formulas (flax nn.LayerNorm, nn.gelu, jax.nn.softmax) and their autodiff
gradients. (What they save is measured by scripts/bench_model.py and mvit_jax.aot, figures in docs/performance.md.)"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
