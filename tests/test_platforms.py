"""The graph follows the platform it is compiled for, never the process that traces it: the train step lowered
on this CPU machine for TPU and for CUDA holds none of the CPU-only paths, and the CPU graph holds them."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

from mvit_jax.models import cpu
from mvit_jax.models import create_model

CPU_CUSTOM_CALLS = ("mvit_softmax", "mvit_softmax_vjp", "mvit_depthwise_kernel_grad")


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


def _cpu_custom_calls(text: str) -> set[str]:
  return {name for name in CPU_CUSTOM_CALLS if re.search(rf"@{name}\b", text)}


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_accelerator_graphs_hold_no_cpu_paths(platform):
  text = _train_step_text(platform)
  assert not _cpu_custom_calls(text)
  if platform == "tpu":  # pool_impl="auto": XLA's grouped convolutions on TPU (forward and backward).
    assert _grouped_convolutions(text) > 0
  else:  # ... and the slices formulation on GPUs.
    assert _grouped_convolutions(text) == 0


def test_cpu_graph_holds_the_cpu_paths():
  text = _train_step_text("cpu")
  assert _grouped_convolutions(text) == 0
  if cpu.kernels.available():
    assert _cpu_custom_calls(text) == set(CPU_CUSTOM_CALLS)
  # In bfloat16 the pooling takes XLA's kernel gradient (the kernels are float32 only; the attention logits stay
  # float32).
  assert "mvit_depthwise_kernel_grad" not in _cpu_custom_calls(_train_step_text("cpu", dtype=jnp.bfloat16))


@pytest.mark.parametrize("impl", ["conv", "slices"])
def test_explicit_pool_impl_holds_on_every_platform(impl):
  for platform in ("cpu", "tpu"):
    assert (_grouped_convolutions(_train_step_text(platform, pool_impl=impl)) > 0) == (impl == "conv")
