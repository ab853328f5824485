"""The graph follows the platform it is compiled for, never the process that traces it: the train step lowered
on this CPU machine for TPU, for CUDA and for the CPU takes each platform's pooling formulation (`pool_impl="auto"`),
and no graph calls anything outside XLA."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

from mvit_jax.models import create_model


def _train_step_text(platform: str, **overrides) -> str:
  model = create_model("mvit_tiny", **overrides)
  x = jnp.zeros((2, 8, 64, 64, 3), jnp.float32)
  params = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), x)["params"]))

  def loss(p, x):
    logits = model.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.key(1)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros((2,), jnp.int32)).mean()

  traced = jax.jit(jax.value_and_grad(loss)).trace(params, jax.ShapeDtypeStruct(x.shape, x.dtype))
  return traced.lower(lowering_platforms=(platform,)).as_text()


def _grouped_convolutions(text: str) -> int:
  return sum(int(n) > 1 for n in re.findall(r"feature_group_count = (\d+)", text))


@pytest.mark.parametrize("platform", ["tpu", "cuda", "cpu"])
def test_each_platform_gets_its_own_graph(platform):
  text = _train_step_text(platform)
  assert "custom_call" not in text
  if platform == "tpu":  # pool_impl="auto": XLA's grouped convolutions on TPU (forward and backward) ...
    assert _grouped_convolutions(text) > 0
  else:  # ... and the slices formulation on GPUs and the CPU.
    assert _grouped_convolutions(text) == 0


@pytest.mark.parametrize("impl", ["conv", "slices"])
def test_explicit_pool_impl_holds_on_every_platform(impl):
  for platform in ("cpu", "tpu"):
    assert (_grouped_convolutions(_train_step_text(platform, pool_impl=impl)) > 0) == (impl == "conv")
