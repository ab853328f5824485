"""`attention_impl`: jax.nn.dot_product_attention computes what the model's own attention computes."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvit_jax.models import create_model


@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_dot_product_attention_equals_the_einsum_attention(dtype, rtol):
  x = jax.random.normal(jax.random.key(1), (2, 4, 32, 32, 3))
  models = {impl: create_model("mvit_tiny", attention_impl=impl, dtype=dtype, num_frames=4, input_size=32)
            for impl in ("einsum", "xla")}
  params = nn.unbox(models["einsum"].init(jax.random.key(0), x)["params"])

  def value_and_grad(model):
    loss = lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, x, train=False)))
    return jax.jit(jax.value_and_grad(loss))(params)

  (got, got_grads), (want, want_grads) = value_and_grad(models["xla"]), value_and_grad(models["einsum"])
  np.testing.assert_allclose(got, want, rtol=rtol)
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want_grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale), got_grads, want_grads)


def test_unknown_attention_impl_is_refused():
  with pytest.raises(ValueError, match="attention_impl"):
    create_model("mvit_tiny", attention_impl="flash")
