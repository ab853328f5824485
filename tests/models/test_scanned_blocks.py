"""Scanned blocks (`scan_blocks`): the same function as unrolled blocks, and parameters that map between the two
layouts, in memory, through the trainer's checkpoints and through `init_from` fine-tuning."""
import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mvit_jax.train import checkpointing
from mvit_jax.train import config as config_lib
from mvit_jax.train import sharding as sharding_lib
from mvit_jax.models import adapt_pretrained, create_model
from mvit_jax.models.config import block_groups
from mvit_jax.models.layout import map_param_trees, to_block_layout

# mvit_tiny with two blocks of one shape in stage 2 (blocks 2 and 3), so that one run is scanned; on a 4x32x32
# clip with the conv form of the pooling, which compiles fastest at these sizes.
DEEPER_TINY = dict(depth=7, dim_mul=((1, 2.0), (5, 2.0)), head_mul=((1, 2.0), (5, 2.0)),
                   pool_q_stride=((1, 1, 2, 2), (5, 1, 2, 2)), pool_impl="conv")
CLIP = (2, 4, 32, 32, 3)


def _init(model, shape=CLIP):
  return nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros(shape))["params"])


def _models(name, **overrides):
  return create_model(name, scan_blocks=True, **overrides), create_model(name, scan_blocks=False, **overrides)


def _assert_trees_close(got, want, rtol):
  """Leaf by leaf, relative to the largest magnitude in the whole tree (some gradients are exactly zero in exact
  arithmetic, e.g. the K-pooling LayerNorm bias, which shifts every logit of a row by the same amount)."""
  scale = max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(want))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale), got, want)


def test_runs_of_one_shape():
  assert block_groups(create_model("mvit_b_16x4").config) == [
      (0, 0), (1, 1), (2, 2), (3, 3), (4, 12), (13, 13), (14, 14), (15, 15)]
  assert block_groups(create_model("mvit_b24_32x3").config) == [
      (0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 19), (20, 20), (21, 21), (22, 23)]
  assert block_groups(create_model("mvit_tiny", **DEEPER_TINY).config) == [(0, 0), (1, 1), (2, 3), (4, 4), (5, 5),
                                                                           (6, 6)]


def test_stacked_parameters_carry_the_layers_axis():
  scanned, _ = _models("mvit_tiny", **DEEPER_TINY)
  boxed = jax.eval_shape(lambda: scanned.init(jax.random.key(0), jnp.zeros(CLIP)))["params"]
  fc1 = boxed["blocks_2_3"]["mlp"]["fc1"]["kernel"]
  assert fc1.names == ("layers", "embed", "mlp") and fc1.value.shape == (2, 64, 256)
  assert "blocks_2" not in boxed and "blocks_4" in boxed


@pytest.mark.parametrize("name,overrides,shape", [
    ("mvit_tiny", dict(DEEPER_TINY, remat_policy="full"), CLIP),
    pytest.param("mvit_b_16x4", dict(pool_impl="conv"), (1, 4, 64, 64, 3),  # Position tables interpolated.
                 marks=pytest.mark.slow),  # A full-size model.
])
def test_scan_on_and_off_give_the_same_logits_and_gradients(name, overrides, shape):
  scanned, unrolled = _models(name, **overrides)
  x = jax.random.normal(jax.random.key(1), shape)
  params = _init(scanned, shape)
  unrolled_params = to_block_layout(params, unrolled.config)
  assert set(unrolled_params) - set(params) >= {"blocks_4", "blocks_5"} if name == "mvit_b_16x4" else {"blocks_2"}

  def value_and_grad(model, p):
    loss = lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, x, train=False)))
    return jax.jit(jax.value_and_grad(loss))(p)

  got, want = value_and_grad(scanned, params), value_and_grad(unrolled, unrolled_params)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  _assert_trees_close(to_block_layout(got[1], unrolled.config), want[1], 1e-5)


def test_layouts_round_trip_exactly_and_abstract_trees_map_too():
  scanned, unrolled = _models("mvit_tiny", **DEEPER_TINY)
  params = _init(scanned)
  back = to_block_layout(to_block_layout(params, unrolled.config), scanned.config)
  jax.tree.map(np.testing.assert_array_equal, back, params)
  np.testing.assert_array_equal(to_block_layout(params, {})["blocks_3"]["mlp"]["fc1"]["kernel"],
                                params["blocks_2_3"]["mlp"]["fc1"]["kernel"][1])
  abstract = jax.eval_shape(lambda: params)
  assert jax.tree.map(lambda a: a.shape, to_block_layout(abstract, {})) == jax.tree.map(
      lambda a: a.shape, to_block_layout(params, {}))


def test_train_mode_takes_the_scanned_drop_path_rates():
  """Rates of zero leave training equal to inference (no branch dropped, none rescaled); non-zero ones drop."""
  x = jax.random.normal(jax.random.key(1), CLIP)
  for rate in (0.0, 0.5):
    model = create_model("mvit_tiny", **DEEPER_TINY, drop_path_rate=rate)
    params = _init(model)
    apply = jax.jit(lambda p, train: model.apply({"params": p}, x, train=train, rngs={"dropout": jax.random.key(2)}),
                    static_argnums=1)
    train = apply(params, True)
    close = np.allclose(train, apply(params, False), rtol=1e-5, atol=1e-6)
    assert close == (rate == 0.0) and np.isfinite(train).all()


@pytest.mark.parametrize("saved_scanned", [True, False])
def test_trainer_checkpoint_restores_into_the_other_layout(tmp_path, saved_scanned):
  """Params and AdamW moments saved with one `scan_blocks` setting restore onto a run with the other."""
  scanned, unrolled = _models("mvit_tiny", **DEEPER_TINY)
  saved_model, restoring_model = (scanned, unrolled) if saved_scanned else (unrolled, scanned)
  mesh = sharding_lib.make_mesh({"data": 2, "fsdp": 4, "model": 1})
  rules = sharding_lib.rules_from_config(config_lib.base_config().sharding_rules)
  tx = optax.adamw(1e-3)

  def state_of(model):
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(CLIP)))["params"]
    shardings = sharding_lib.param_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed),
                            shardings)
    opt_abstract = jax.eval_shape(tx.init, abstract)
    opt_shardings = sharding_lib.opt_state_shardings(opt_abstract, abstract, shardings, mesh)
    opt_abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), opt_abstract,
                                opt_shardings)
    return abstract, opt_abstract

  params = _init(saved_model)
  grads = jax.tree.map(jnp.ones_like, params)
  opt_state = tx.init(params)
  _, opt_state = tx.update(grads, opt_state, params)  # Non-zero moments.
  with checkpointing.create_manager(str(tmp_path)) as manager:
    checkpointing.save(manager, 3, params, opt_state, jax.random.key(5), iter(grain.MapDataset.range(8)))
    manager.wait_until_finished()
  abstract, opt_abstract = state_of(restoring_model)
  with checkpointing.create_manager(str(tmp_path)) as manager:
    got_params, got_opt, _, _ = checkpointing.restore(manager, 3, abstract, opt_abstract,
                                                      iter(grain.MapDataset.range(8)))
  to_restoring = lambda tree: map_param_trees(tree, lambda t: to_block_layout(t, restoring_model.config))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(got_params), to_restoring(params))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(got_opt), to_restoring(jax.device_get(opt_state)))
  jax.tree.map(lambda a, s: (a.sharding == s.sharding) or pytest.fail(f"{a.sharding} != {s.sharding}"),
               got_params, abstract)


def test_init_from_maps_the_layout_and_keeps_the_targets():
  scanned, unrolled = _models("mvit_tiny", **DEEPER_TINY)
  params = _init(unrolled)
  target = _init(create_model("mvit_tiny", num_classes=3, **DEEPER_TINY))
  adapted = adapt_pretrained(params, target)
  assert set(adapted) == set(target)
  np.testing.assert_array_equal(adapted["blocks_2_3"]["attn"]["qkv"]["kernel"][0],
                                params["blocks_2"]["attn"]["qkv"]["kernel"])
  assert adapted["head"]["kernel"].shape == (128, 3)
