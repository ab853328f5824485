"""MViT v1 model: layer table, parameter counts, FLOPs, train/eval behaviour, precision, sharding names, NNX."""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mvit_jax.models import block_specs, create_model, get_config
from tests import testlib


def test_mvit_b_16x4_layer_table():
  """Per-block dims, heads and strides of MViT-B 16x4 (the paper's MViT-B; PySlowFast MVIT_B_16x4_CONV)."""
  specs = block_specs(get_config("mvit_b_16x4"))
  assert [(s.dim_in, s.dim_out, s.num_heads) for s in specs] == (
      [(96, 192, 1), (192, 192, 2), (192, 384, 2), (384, 384, 4)] + [(384, 384, 4)] * 9
      + [(384, 768, 4), (768, 768, 8), (768, 768, 8)])
  assert [i for i, s in enumerate(specs) if s.q_kernel] == [1, 3, 14]
  assert [s.kv_stride for s in specs] == [(1, 8, 8)] + [(1, 4, 4)] * 2 + [(1, 2, 2)] * 11 + [(1, 1, 1)] * 2
  assert all(s.kv_kernel == (3, 3, 3) for s in specs)
  np.testing.assert_allclose([s.drop_path for s in specs], 0.2 * np.arange(16) / 15)


def test_b24_default_kernel_rule():
  """PySlowFast MVIT_B_32x3_CONV.yaml: kernel = stride + 1, no K/V pooling once the stride reaches 1."""
  specs = block_specs(get_config("mvit_b24_32x3"))
  assert [s.kv_kernel for s in specs] == [(1, 9, 9)] * 2 + [(1, 5, 5)] * 3 + [(1, 3, 3)] * 16 + [None] * 3
  assert [i for i, s in enumerate(specs) if s.q_kernel == (1, 3, 3)] == [2, 5, 21]


@pytest.mark.parametrize(
    "name,overrides,expected,tolerance",
    [
        ("mvit_b_16x4", {"num_classes": 400}, 36_610_672, 0.0),
        ("mvit_s_16x4", {}, 26.1e6, 0.01),
        ("mvit_b24_32x3", {"num_classes": 600}, 52.9e6, 0.01),
        ("mvit_b16_in1k", {}, 37.0e6, 0.01),
    ],
)
def test_parameter_counts(name, overrides, expected, tolerance):
  count = testlib.param_count(name, **overrides)
  assert abs(count - expected) <= tolerance * expected, count


@pytest.mark.parametrize(
    "name,paper_gflops",
    [
        ("mvit_b_16x4", 70.5),
        ("mvit_b_32x3", 170.0),
        ("mvit_b24_32x3", 236.0),
        ("mvit_b16_in1k", 7.8),
        pytest.param("mvit_s_16x4", 32.9, marks=pytest.mark.xfail(
            strict=True, reason="MViT-S: no public config; the paper's Table 3c layout gives 29.9 GFLOPs")),
    ],
)
def test_flops_match_paper(name, paper_gflops):
  from mvit_jax.tools.model_stats import model_stats

  gflops = model_stats(name)["gflops"]
  assert abs(gflops / paper_gflops - 1) <= 0.03, gflops


# The tiny model on a 4x32x32 clip; depthwise pooling in its conv form compiles fastest at these sizes
# (tests/models/test_pooling.py and the parity tests cover the default formulation).
TINY = dict(pool_impl="conv")
_JITTED = {}


def _tiny(**overrides):
  model = create_model("mvit_tiny", **{**TINY, **overrides})
  x = jax.random.normal(jax.random.key(1), (2, 4, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  return model, variables, x


def _apply(model, variables, x, train=False, key=None):
  """Jitted forward, compiled once per (config, train)."""
  cache_key = (model.config, train)
  if cache_key not in _JITTED:
    _JITTED[cache_key] = jax.jit(lambda v, x, r: model.apply(v, x, train=train, rngs=r))
  return _JITTED[cache_key](variables, x, None if key is None else {"dropout": key})


def test_forward_shapes_and_eval_determinism():
  model, variables, x = _tiny()
  logits = _apply(model, variables, x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(logits, _apply(model, variables, x, key=jax.random.key(2)))
  # Dropout and drop path act only with train=True.
  a = _apply(model, variables, x, train=True, key=jax.random.key(2))
  b = _apply(model, variables, x, train=True, key=jax.random.key(3))
  assert not np.allclose(a, b)
  none = create_model("mvit_tiny", drop_path_rate=0.0, head_dropout_rate=0.0, **TINY)
  np.testing.assert_allclose(_apply(none, variables, x, train=True, key=jax.random.key(2)), logits,
                             rtol=1e-5, atol=1e-5)


def test_position_embedding_interpolation():
  model, variables, _ = _tiny()
  bigger = jax.random.normal(jax.random.key(4), (1, 8, 48, 48, 3))
  assert _apply(model, variables, bigger).shape == (1, 10)
  # Interpolating to the built grid is the identity.
  from mvit_jax.models.layers import resize_table

  table = jax.random.normal(jax.random.key(5), (16 * 16, 4))
  np.testing.assert_array_equal(resize_table(table, (16, 16), (16, 16)), table)
  up = resize_table(jnp.arange(4.0)[:, None], (4,), (8,))
  np.testing.assert_allclose(up.ravel(), [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])  # half-pixel, edge-clamped


def test_image_model_accepts_both_layouts():
  model = create_model("mvit_b16_in1k", input_size=32, num_classes=5, depth=2, dim_mul=((1, 2.0),),
                       head_mul=((1, 2.0),), pool_q_stride=((1, 1, 2, 2),), **TINY)
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(1), images)
  assert variables["params"]["patch_embed"]["proj"]["kernel"].value.shape == (7, 7, 3, 96)
  np.testing.assert_array_equal(_apply(model, variables, images), _apply(model, variables, images[:, None]))


def test_train_steps_reduce_loss():
  model, variables, x = _tiny()
  params = nn.unbox(variables["params"])
  labels = jnp.array([3, 7])
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, key):
    def loss_fn(p):
      logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for i in range(8):
    params, opt_state, loss = step(params, opt_state, jax.random.key(i))
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0], losses


def test_mixed_precision():
  model, variables, x = _tiny()
  bf16 = create_model("mvit_tiny", dtype="bfloat16", **TINY)
  params = jax.eval_shape(bf16.init, jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nn.unbox(params)))
  a = _apply(model, variables, x)
  b = _apply(bf16, variables, x)
  assert b.dtype == jnp.float32
  assert np.linalg.norm(a - b) / np.linalg.norm(a) < 5e-2
  # The attention softmax runs in float32 even in bfloat16 compute.
  jaxpr = str(jax.make_jaxpr(lambda v, x: bf16.apply(v, x))(variables, x))
  assert "preferred_element_type=float32" in jaxpr


def test_every_param_has_logical_axes():
  model, variables, _ = _tiny()
  leaves = jax.tree.leaves(variables, is_leaf=lambda v: isinstance(v, nn.Partitioned))
  assert leaves and all(isinstance(v, nn.Partitioned) for v in leaves)
  for v in leaves:
    assert len(v.names) == v.value.ndim
  specs = nn.get_partition_spec(variables)
  assert specs["params"]["blocks_0"]["mlp"]["fc1"]["kernel"] == jax.sharding.PartitionSpec("embed", "mlp")


def test_remat_gives_same_gradients():
  model, variables, x = _tiny(drop_path_rate=0.0)
  remat = create_model("mvit_tiny", drop_path_rate=0.0, remat_policy="nothing_saveable", **TINY)
  grad = lambda m: jax.jit(jax.grad(lambda v: jnp.sum(m.apply(v, x, train=True, rngs={"dropout": jax.random.key(0)}))))(variables)
  for a, b in zip(jax.tree.leaves(grad(model)), jax.tree.leaves(grad(remat))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_pool_impls_agree_in_model():
  model, variables, x = _tiny()
  model = create_model("mvit_tiny", pool_impl="slices")
  conv = create_model("mvit_tiny", pool_impl="conv")
  np.testing.assert_allclose(_apply(model, variables, x), _apply(conv, variables, x), rtol=1e-4, atol=1e-4)


def test_runs_inside_nnx_through_bridge():
  from flax import nnx

  model = create_model("mvit_tiny", **TINY)
  x = jax.random.normal(jax.random.key(1), (2, 4, 32, 32, 3))
  # Without a mesh, NNX variables must not try to shard themselves on creation.
  with nnx.use_eager_sharding(False):
    wrapped = nnx.bridge.ToNNX(model, rngs=nnx.Rngs(0, dropout=1))
    nnx.bridge.lazy_init(wrapped, x, train=False)
  logits = nnx.jit(lambda m, x: m(x, train=False))(wrapped, x)
  assert logits.shape == (2, 10)
  variables = {"params": nnx.to_pure_dict(nnx.state(wrapped, nnx.Param))}
  np.testing.assert_allclose(_apply(model, variables, x), logits, rtol=1e-5, atol=1e-5)


def test_unknown_override_names_the_key():
  with pytest.raises(ValueError, match="num_clases"):
    create_model("mvit_b_16x4", num_clases=10)


@pytest.mark.slow
def test_light_imports():
  code = "import sys, mvit_jax.models, mvit_jax.convert; assert 'tensorflow' not in sys.modules, 'tensorflow'"
  subprocess.run([sys.executable, "-c", code], check=True)


def test_adapt_pretrained_for_fine_tuning():
  from mvit_jax.models import adapt_pretrained

  src = create_model("mvit_tiny", **TINY)  # 8x64x64 input -> 4x16x16 tokens, 10 classes
  dst = create_model("mvit_tiny", num_frames=4, input_size=32, num_classes=5, **TINY)  # 2x8x8 tokens
  shape = lambda m: jax.ShapeDtypeStruct((1, m.config.num_frames, m.config.input_size, m.config.input_size, 3),
                                         jnp.float32)
  init = lambda m, seed: nn.unbox(jax.jit(m.init)(jax.random.key(seed), jnp.zeros(shape(m).shape))["params"])
  pretrained, target = init(src, 0), init(dst, 1)
  adapted = adapt_pretrained(pretrained, target)
  pos = adapted["pos_embed"]
  assert pos["pos_embed_spatial"].shape == (64, 32) and pos["pos_embed_temporal"].shape == (2, 32)
  # 16x16 -> 8x8 half-pixel linear resize = mean of 2x2 blocks.
  grid = np.asarray(pretrained["pos_embed"]["pos_embed_spatial"]).reshape(16, 16, 32)
  np.testing.assert_allclose(pos["pos_embed_spatial"].reshape(8, 8, 32),
                             grid.reshape(8, 2, 8, 2, 32).mean(axis=(1, 3)), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(adapted["head"]["kernel"], target["head"]["kernel"])  # new classifier
  np.testing.assert_array_equal(adapted["blocks_1"]["attn"]["qkv"]["kernel"],
                                pretrained["blocks_1"]["attn"]["qkv"]["kernel"])
  wider = create_model("mvit_tiny", embed_dim=48, **TINY)
  with pytest.raises(ValueError, match="the target model needs"):
    adapt_pretrained(pretrained, init(wider, 2))


@pytest.mark.slow
def test_model_stats_json_cli():
  import json

  out = subprocess.run([sys.executable, "-m", "mvit_jax.model_stats", "--json", "--variants=mvit_b16_in1k"],
                       capture_output=True, text=True, check=True).stdout
  (row,) = json.loads(out)
  assert set(row) == {"name", "params", "gflops", "paper_params", "paper_gflops"}
  assert row["name"] == "mvit_b16_in1k" and row["paper_gflops"] == 7.8 and row["params"] == 36_982_600


def test_drop_path_zeroes_or_rescales_whole_samples():
  from mvit_jax.models.layers import DropPath

  x = jnp.ones((64, 5, 3))
  y = DropPath(0.25).apply({}, x, True, rngs={"dropout": jax.random.key(0)})
  per_sample = np.asarray(y).reshape(64, -1)
  assert set(np.unique(per_sample.min(1))) <= {0.0, np.float32(1 / 0.75)} and np.all(per_sample.min(1) == per_sample.max(1))
  assert 0 < (per_sample[:, 0] == 0).sum() < 64
  np.testing.assert_array_equal(DropPath(0.25).apply({}, x, False), x)


@pytest.mark.parametrize("name,overrides,shape", [
    ("mvit_b_16x4", {}, (1, 16, 224, 224, 3)),
    ("mvitv2_tiny", {"num_classes": 10}, (1, 224, 224, 3)),
])
def test_features_give_the_stage_grids_and_the_logits(name, overrides, shape):
  """Per-stage grids at spatial strides 4, 8, 16, 32 and the pre-logit width (abstract shapes: nothing runs)."""
  model = create_model(name, **overrides)
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)
  feats = jax.eval_shape(lambda p, x: model.apply(p, x, method="features"), params, x)
  height = shape[-3]
  grids = [feats[f"stage{i}"].shape for i in range(1, 5)]
  assert [g[2:4] for g in grids] == [(height // s, height // s) for s in (4, 8, 16, 32)]
  assert sorted(feats) == ["logits", "pre_logits", "stage1", "stage2", "stage3", "stage4"]
  assert feats["pre_logits"].shape == (1, grids[-1][-1])
  assert feats["logits"].shape == (1, model.config.num_classes)


@pytest.mark.parametrize("v2", [False, True])
def test_pooled_features_through_the_head_are_the_logits(v2):
  """mvit_tiny, and mvit_tiny with the MViTv2 options and no class token (pre_logits = mean of the last grid)."""
  v2_options = dict(rel_pos=True, residual_pooling=True, abs_pos=False, cls_token=False) if v2 else {}
  model = create_model("mvit_tiny", num_classes=5, num_frames=4, input_size=32, **v2_options)
  c = model.config
  x = jax.random.normal(jax.random.key(1), (2, c.num_frames, c.input_size, c.input_size, 3))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  logits, feats = jax.jit(lambda v, x: (model.apply(v, x), model.apply(v, x, method="features")))(variables, x)
  params = nn.unbox(variables["params"])
  head = lambda v: v @ params["head"]["kernel"] + params["head"]["bias"]
  np.testing.assert_allclose(head(feats["pre_logits"]), logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(feats["logits"], logits)
  if not c.cls_token:  # Without a class token pre_logits is the mean of the last grid after the final norm.
    last = feats[f"stage{len([k for k in feats if k.startswith('stage')])}"]
    tokens = last.reshape(2, -1, last.shape[-1])
    normed = nn.LayerNorm(epsilon=c.norm_eps).apply({"params": params["norm"]}, tokens)
    np.testing.assert_allclose(head(normed.mean(1)), logits, rtol=1e-4, atol=1e-4)
