"""`python -m mvit_jax.export`: the StableHLO artifact, run by jax in a process that never imports mvit_jax, and the
TensorFlow SavedModel give the in-process model's logits at batch 1 and 3, for a v1 and a v2 model; the artifact
holds no mvit_jax custom call; bad input is one line."""
import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvit_jax.inference import export
from mvit_jax.models import model_card
from mvit_jax.data import config as data_config_lib
from mvit_jax.data.device_preprocess import normalize
from mvit_jax.system.errors import InputError
from mvit_jax.models import create_model
from mvit_jax.models import load_pretrained
from mvit_jax.models import pretrained
from tests import testlib

REPO = testlib.REPO
# Two small models: mvit_tiny cut to 4 blocks of two widths (blocks 2-3 a scanned run; pooling by the default
# pool_impl "auto", a platform_dependent choice in the exported program) and a 2-block video MViTv2 (conv pooling:
# the cheapest to compile).
V1_SMALL = dict(dim_mul=((1, 2.0),), head_mul=((1, 2.0),), pool_q_stride=((1, 1, 2, 2),))
V2_SMALL = dict(depth=2, embed_dim=32, num_classes=5, num_frames=4, input_size=32, dim_mul=((1, 2.0),),
                head_mul=((1, 2.0),), pool_kv_stride_adaptive=(1, 4, 4), pool_q_stride=((0, 1, 1, 1), (1, 1, 2, 2)),
                pool_impl="conv")
# The v1 folder's recipe: other mean and std than the defaults, so that the exported constants must come from it.
V1_RECIPE = model_card.InputRecipe(num_frames=8, sampling_rate=2, target_fps=30.0, short_side=72, crop_size=64,
                                   mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))

# What docs/export.md tells users to run, for each artifact folder given on the command line.
STABLEHLO_LOADER = """
import sys
import jax
import numpy as np

for folder in sys.argv[1:]:
  exported = jax.export.deserialize(open(f"{folder}/model.stablehlo", "rb").read())
  weights = jax.device_put(dict(np.load(f"{folder}/weights.npz")))
  clips = np.load(f"{folder}/clips.npy")
  logits = {f"batch{n}": np.asarray(exported.call(weights, clips[:n])) for n in (1, 3)}
  np.savez(f"{folder}/logits.npz", **logits)
assert "mvit_jax" not in sys.modules
"""


def _random_params(model, seed):
  """Seeded N(0, 0.1) values for every parameter (1 + that for norm scales); shapes from jax.eval_shape, not an
  (eager, slow) init."""
  c = model.config
  x = jnp.zeros((1, c.num_frames, c.input_size, c.input_size, 3))
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), x))["params"])
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, s: rng.normal(0, 0.1, s.shape).astype(np.float32) + (path[-1].key == "scale"), shapes)


def _write_model_folder(folder, name, overrides, recipe):
  os.makedirs(folder)
  pretrained.save_params(str(folder), _random_params(create_model(name, **overrides), seed=0))
  if recipe is None:  # A folder from before the model card: name and overrides only.
    (folder / model_card.MODEL_JSON).write_text(json.dumps({"name": name, "overrides": overrides}))
  else:
    model_card.write(str(folder), model_card.ModelCard(name=name, overrides=overrides, input=recipe))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """{'v1': (folder, clips, reference logits), 'v2': ...}: seeded random weights, seeded uint8 clips (batch 3) and
  the logits of the model as load_pretrained builds it (CPU kernels and all)."""
  root = tmp_path_factory.mktemp("export")
  defaults = data_config_lib.default_data_config()
  out = {}
  for key, name, overrides, recipe in (("v1", "mvit_tiny", V1_SMALL, V1_RECIPE), ("v2", "mvitv2_s_16x4", V2_SMALL, None)):
    folder = root / key
    _write_model_folder(folder, name, overrides, recipe)
    module, variables = load_pretrained(str(folder))
    c = module.config
    mean, std = (recipe.mean, recipe.std) if recipe else (defaults.mean, defaults.std)
    clips = np.random.default_rng(1).integers(0, 256, (3, c.num_frames, c.input_size, c.input_size, 3), np.uint8)
    out[key] = (folder, clips, np.asarray(jax.jit(module.apply)(variables, normalize(clips, mean, std))))
  return out



def _run_cli(*args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "mvit_jax.export", *map(str, args)], cwd=cwd, capture_output=True,
                        text=True, timeout=600)


def _custom_call_targets(exported) -> set[str]:
  return set(re.findall(r"custom_call @(\w+)", exported.mlir_module()))


@pytest.mark.slow
def test_stablehlo_runs_without_mvit_jax(models, tmp_path):
  """v1 through the command line, v2 through export_model; both loaded and run by the documented snippet in one
  fresh, isolated interpreter started outside the repository."""
  outs = {key: tmp_path / key for key in models}
  result = _run_cli("--model", models["v1"][0], "--out", outs["v1"])
  assert result.returncode == 0, result.stderr
  export.export_model(str(models["v2"][0]), str(outs["v2"]))
  for key, (folder, clips, _) in models.items():
    np.save(outs[key] / "clips.npy", clips)
    with open(outs[key] / export.STABLEHLO_FILE, "rb") as f:
      exported = jax.export.deserialize(f.read())
    assert exported.platforms == ("cpu", "cuda", "tpu")
    assert str(exported.in_avals[-1].shape[0]) == "b"  # Symbolic batch.
    assert not any(name.startswith("mvit_") for name in _custom_call_targets(exported))
    assert json.loads((outs[key] / "model.json").read_text()) == json.loads((folder / "model.json").read_text())

  env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
  loader = subprocess.run([sys.executable, "-I", "-c", STABLEHLO_LOADER, *map(str, outs.values())], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
  assert loader.returncode == 0, loader.stderr
  for key, (_, _, reference) in models.items():
    logits = np.load(outs[key] / "logits.npz")
    assert testlib.rel_l2(logits["batch3"], reference) < 1e-5
    assert testlib.rel_l2(logits["batch1"], reference[:1]) < 1e-5


def test_savedmodel_serves_the_same_logits(models, tmp_path):
  tf = pytest.importorskip("tensorflow")
  for key, (folder, clips, reference) in models.items():
    out = tmp_path / key
    export.export_model(str(folder), str(out), "savedmodel")
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    assert serve.structured_input_signature[1]["clips"].dtype == tf.uint8
    for n in (1, 3) if key == "v1" else (3,):  # TensorFlow compiles once per batch size.
      logits = serve(clips=tf.constant(clips[:n]))["logits"].numpy()
      assert testlib.rel_l2(logits, reference[:n]) < 1e-4


@pytest.mark.slow
def test_bad_input_is_one_line(models, tmp_path):
  folder = models["v1"][0]
  result = _run_cli("--model", folder, "--out", tmp_path / "a", "--format", "onnx")
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and "--format" in lines[0], result.stderr
  with pytest.raises(InputError, match="no such folder"):
    export.export_model(str(tmp_path / "missing"), str(tmp_path / "b"))
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("")
  with pytest.raises(InputError, match="not an empty folder"):
    export.export_model(str(folder), str(tmp_path / "full"))
  with pytest.raises(InputError, match="unknown format"):
    export.export_model(str(folder), str(tmp_path / "c"), "onnx")
