"""MViTv2: layer table, parameter counts, scanned and unrolled blocks, relative position tables at other sizes."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch

from mvit_jax.models import adapt_pretrained, block_specs, create_model, get_config
from mvit_jax.models.config import block_groups
from mvit_jax.models.layout import to_block_layout
from tests import testlib

# A small video MViTv2: 4x32x32 clips, stages of 1, 3 and 1 blocks (blocks 2-3 form a scanned run), conv pooling
# (the fastest to compile at these sizes).
V2_TINY = dict(depth=5, embed_dim=32, num_classes=5, num_frames=4, input_size=32, dim_mul=((1, 2.0), (4, 2.0)),
               head_mul=((1, 2.0), (4, 2.0)), pool_kv_stride_adaptive=(1, 4, 4), pool_impl="conv",
               pool_q_stride=((0, 1, 1, 1), (1, 1, 2, 2), (2, 1, 1, 1), (3, 1, 1, 1), (4, 1, 2, 2)))


def test_mvitv2_s_layer_table():
  """Per-block dims, heads, strides and relative position table rows of MViTv2-S 16x4 (torchvision mvit_v2_s)."""
  specs = block_specs(get_config("mvitv2_s_16x4"))
  assert [(s.dim_in, s.dim_out, s.attn_dim, s.num_heads) for s in specs] == (
      [(96, 96, 96, 1), (96, 192, 192, 2), (192, 192, 192, 2), (192, 384, 384, 4)] + [(384, 384, 384, 4)] * 10
      + [(384, 768, 768, 8), (768, 768, 768, 8)])
  assert all(s.q_kernel == (3, 3, 3) for s in specs)
  assert [i for i, s in enumerate(specs) if s.q_stride == (1, 2, 2)] == [1, 3, 14]
  assert [s.kv_stride for s in specs] == [(1, 8, 8)] + [(1, 4, 4)] * 2 + [(1, 2, 2)] * 11 + [(1, 1, 1)] * 2
  assert [s.rel_pos_hw for s in specs] == [111, 55, 55] + [27] * 12 + [13]
  assert all(s.rel_pos_t == 15 for s in specs)


def test_large_in1k_expands_channels_in_the_mlp():
  """timm's mvitv2_large: v1-style expansion in the MLP of each stage's last block, attention at the input width."""
  specs = block_specs(get_config("mvitv2_large"))
  assert [(i, s.dim_in, s.dim_out, s.attn_dim) for i, s in enumerate(specs) if s.dim_in != s.dim_out] == [
      (1, 144, 288, 144), (7, 288, 576, 288), (43, 576, 1152, 576)]
  assert [i for i, s in enumerate(specs) if s.q_stride == (1, 2, 2)] == [2, 8, 44]


def _timm_count(name):
  with torch.device("meta"):  # Shapes only: no memory for the weights, no init time.
    return sum(p.numel() for p in timm.create_model(name, num_classes=1000).parameters())


@pytest.mark.parametrize("name,overrides,expected,tolerance", [
    ("mvitv2_s_16x4", {"num_classes": 400}, 34_537_744, 0.0),  # torchvision mvit_v2_s.
    ("mvitv2_b_32x3", {}, 51.2e6, 0.01),  # P2 Table 10.
    ("mvitv2_tiny", {}, 24e6, 0.01),  # P2 Table 1 (B: 51.47 M is timm's count below, P2 rounds it to 52).
    ("mvitv2_small", {}, 35e6, 0.01),
    ("mvitv2_large", {}, 218e6, 0.01),
])
def test_parameter_counts_match_the_papers(name, overrides, expected, tolerance):
  count = testlib.param_count(name, **overrides)
  assert abs(count - expected) <= tolerance * expected, (count, expected)


@pytest.mark.parametrize("name", ["mvitv2_tiny", "mvitv2_small", "mvitv2_base", "mvitv2_large", "mvitv2_small_cls",
                                  "mvitv2_base_cls", "mvitv2_large_cls", "mvitv2_huge_cls"])
def test_image_parameter_counts_equal_timms(name):
  assert testlib.param_count(name) == _timm_count(name)


def _init(model, shape):
  return nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros(shape))["params"])


def test_scan_on_and_off_give_the_same_logits_and_gradients():
  """Relative position tables are stacked like every other block parameter and map between the two layouts."""
  scanned = create_model("mvitv2_s_16x4", scan_blocks=True, **V2_TINY)
  unrolled = create_model("mvitv2_s_16x4", scan_blocks=False, **V2_TINY)
  assert (2, 3) in block_groups(scanned.config)
  shape = (2, 4, 32, 32, 3)
  params = _init(scanned, shape)
  assert params["blocks_2_3"]["attn"]["rel_pos_h"].shape == (2, 7, 32)
  assert params["blocks_2_3"]["attn"]["rel_pos_t"].shape == (2, 3, 32)
  x = jax.random.normal(jax.random.key(1), shape)

  def value_and_grad(model, p):
    loss = lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, x, train=False)))
    return jax.jit(jax.value_and_grad(loss))(p)

  got, want = value_and_grad(scanned, params), value_and_grad(unrolled, to_block_layout(params, unrolled.config))
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  got_grads = to_block_layout(got[1], unrolled.config)
  scale = max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(want[1]))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale), got_grads, want[1])
  assert float(jnp.abs(want[1]["blocks_0"]["attn"]["rel_pos_t"]).max()) > 0  # The tables take part.


def test_other_input_size_interpolates_the_tables():
  """A model built for 4x32x32 runs on 8x48x48 clips and gives the logits of the model built for 8x48x48 with
  its relative position tables interpolated first (adapt_pretrained, as PySlowFast at load time)."""
  small = create_model("mvitv2_s_16x4", **V2_TINY)
  large = create_model("mvitv2_s_16x4", **dict(V2_TINY, num_frames=8, input_size=48))
  params = _init(small, (1, 4, 32, 32, 3))
  adapted = adapt_pretrained(params, _init(large, (1, 8, 48, 48, 3)))
  assert adapted["blocks_0"]["attn"]["rel_pos_h"].shape == (23, 32) != params["blocks_0"]["attn"]["rel_pos_h"].shape
  assert adapted["blocks_0"]["attn"]["rel_pos_t"].shape == (7, 32)
  x = jax.random.normal(jax.random.key(2), (2, 8, 48, 48, 3))
  got = jax.jit(lambda p: small.apply({"params": p}, x))(params)
  want = jax.jit(lambda p: large.apply({"params": p}, x))(adapted)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.isfinite(got).all() and got.shape == (2, 5)


def test_image_model_has_no_class_token_or_temporal_table():
  """No class token and no temporal table in an image model (the timm parity tests check the mean-pooled logits)."""
  model = create_model("mvitv2_tiny", input_size=32, num_classes=3, pool_impl="conv")
  params = _init(model, (1, 32, 32, 3))
  assert "pos_embed" not in params and "rel_pos_t" not in params["blocks_0"]["attn"]
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  logits = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
  assert logits.shape == (2, 3) and np.isfinite(logits).all()


@pytest.mark.parametrize("name,paper_gflops", [("mvitv2_s_16x4", 64.0), ("mvitv2_b_32x3", 225.0), ("mvitv2_tiny", 4.7),
                                               ("mvitv2_small", 7.0), ("mvitv2_base", 10.2)])
def test_flops_match_paper(name, paper_gflops):
  from mvit_jax.tools.model_stats import model_stats

  gflops = model_stats(name)["gflops"]
  assert abs(gflops / paper_gflops - 1) <= 0.03, gflops


def test_dot_product_attention_takes_the_relative_position_bias():
  """attention_impl='xla' (jax.nn.dot_product_attention with the bias argument) gives the einsum path's logits."""
  x = jax.random.normal(jax.random.key(1), (2, 4, 32, 32, 3))
  einsum = create_model("mvitv2_s_16x4", **V2_TINY)
  xla = create_model("mvitv2_s_16x4", attention_impl="xla", **V2_TINY)
  variables = {"params": _init(einsum, x.shape)}
  np.testing.assert_allclose(jax.jit(xla.apply)(variables, x), jax.jit(einsum.apply)(variables, x), rtol=1e-5,
                             atol=1e-5)
