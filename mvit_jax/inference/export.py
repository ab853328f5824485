"""Exports a model folder as a servable function, one clip in, logits out: a StableHLO artifact or a TF SavedModel.

    python -m mvit_jax.export --model DIR --out OUT [--format stablehlo|savedmodel]

The function takes uint8 clips (B, T, H, W, 3) (image models: (B, H, W, 3)), B any size, T, H, W those of the
model card's input recipe, and returns float32 logits (B, num_classes): normalisation (pixel / 255 - mean) / std
inside, the forward pass in the model config's compute dtype, no dropout. It is lowered once with
`jax.export` for CPU, CUDA and TPU with a symbolic batch dimension; the weights are its first argument, not
constants in the program.

* `stablehlo`: OUT/model.stablehlo (`jax.export` serialization), OUT/weights.npz (the parameters, keys
  'blocks_0/attn/qkv/kernel', ...), OUT/model.json (the model card) and OUT/export.json (the signature). Running
  it needs jax alone: `jax.export.deserialize(...).call(dict(np.load('weights.npz')), clips)`.
* `savedmodel`: a TensorFlow SavedModel in OUT whose `serving_default` signature maps `clips` to `logits`; the
  weights are its variables and the program the same StableHLO, run by TensorFlow's XlaCallModule op; plus
  model.json and export.json.

DIR and OUT may be local folders or bucket URLs (`gs://bucket/...`). Nothing is written unless the export succeeds
(to a bucket, export.json is written last). docs/export.md has the loader snippets.
"""

from __future__ import annotations

from collections.abc import Callable
import json
from typing import Any

from absl import app
from absl import flags
from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np

from mvit_jax.system import files
from mvit_jax.system import storage
from mvit_jax.models import model_card
from mvit_jax.data import config as data_config_lib
from mvit_jax.data.device_preprocess import normalize
from mvit_jax.system.errors import InputError
from mvit_jax.system.errors import check_folder
from mvit_jax.models import load_pretrained
from mvit_jax.models.config import MViTConfig

FORMATS = ("stablehlo", "savedmodel")
PLATFORMS = ("cpu", "cuda", "tpu")
STABLEHLO_FILE = "model.stablehlo"
WEIGHTS_FILE = "weights.npz"
EXPORT_JSON = "export.json"
# The StableHLO TensorFlow is given: XlaCallModule reads artifacts up to the StableHLO version of its build, which
# trails jax's; 12 weeks back covers a TensorFlow release of the same quarter as jax.
TF_STABLEHLO_REQUIREMENT = "WEEK_12"

_MODEL = flags.DEFINE_string("model", None, "Model folder (local or gs://): a converted checkpoint or a training "
                             "workdir.")
_OUT = flags.DEFINE_string("out", None, "Output folder, local or gs:// (created; must not exist or be empty).")
_FORMAT = flags.DEFINE_enum("format", "stablehlo", FORMATS, "Artifact format.")
flags.mark_flags_as_required(["model", "out"])


def input_recipe(card: model_card.ModelCard, config: MViTConfig) -> tuple[int, int, tuple, tuple]:
  """(num_frames, crop_size, mean, std) of the card's input recipe; without one, the model config's frames and
  input size and the data config's default mean and std."""
  if card.input is not None:
    return card.input.num_frames, card.input.crop_size, tuple(card.input.mean), tuple(card.input.std)
  data = data_config_lib.default_data_config()
  logging.info("The model card has no input recipe: %d frames of %d px (model config), mean %s, std %s (data config "
               "defaults).", config.num_frames, config.input_size, tuple(data.mean), tuple(data.std))
  return config.num_frames, config.input_size, tuple(data.mean), tuple(data.std)


def clip_shape(config: MViTConfig, num_frames: int, crop_size: int) -> tuple[int, ...]:
  """One clip's shape: (T, H, W, 3) for video models, (H, W, 3) for image models."""
  frames = () if config.image else (num_frames,)
  return (*frames, crop_size, crop_size, 3)


def flat_weights(params: Any) -> dict[str, np.ndarray]:
  """The parameter tree as {'blocks_0/attn/qkv/kernel': array, ...} (the keys of weights.npz)."""
  return {key: np.asarray(value) for key, value in flax.traverse_util.flatten_dict(params, sep="/").items()}


def logits_function(module, mean, std) -> Callable[[dict[str, jax.Array], jax.Array], jax.Array]:
  """(flat weights, uint8 clips) -> float32 logits (B, num_classes), normalisation included, no dropout."""

  def logits(weights, clips):
    params = flax.traverse_util.unflatten_dict(weights, sep="/")
    return module.apply({"params": params}, normalize(clips, mean, std), train=False)

  return logits


def export_logits(module, weights: dict[str, np.ndarray], shape: tuple, mean, std) -> jax.export.Exported:
  """`logits_function` lowered for PLATFORMS with a symbolic batch: `shape` is the clip shape without its batch."""
  batch, = jax.export.symbolic_shape("b")
  weight_specs = {key: jax.ShapeDtypeStruct(value.shape, value.dtype) for key, value in weights.items()}
  clips = jax.ShapeDtypeStruct((batch, *shape), jnp.uint8)
  return jax.export.export(jax.jit(logits_function(module, mean, std)), platforms=PLATFORMS)(weight_specs, clips)


def signature(exported: jax.export.Exported, config: MViTConfig, mean, std, fmt: str, **extra) -> dict[str, Any]:
  """export.json: what the artifact takes and returns, and what made it."""
  clips, logits = exported.in_avals[-1], exported.out_avals[0]
  return {
      "format": fmt,
      "input": {"name": "clips", "shape": [None, *clips.shape[1:]], "dtype": "uint8", "layout": (
          "BHWC" if config.image else "BTHWC"), "mean": list(mean), "std": list(std)},
      "output": {"name": "logits", "shape": [None, logits.shape[1]], "dtype": "float32"},
      "compute_dtype": jnp.dtype(config.dtype).name,
      "platforms": list(exported.platforms),
      "jax_version": jax.__version__,
      **extra,
  }


def write_stablehlo(out: str, exported: jax.export.Exported, weights: dict[str, np.ndarray]) -> dict[str, Any]:
  """The program and the weights, into the local folder `out`."""
  storage.write_bytes(storage.join(out, STABLEHLO_FILE), exported.serialize())
  np.savez(storage.join(out, WEIGHTS_FILE), **weights)
  return {"program": STABLEHLO_FILE, "weights": WEIGHTS_FILE}


def _tensorflow():
  """(tf, XlaCallModule caller, jax's MLIR context maker, MLIR ir, passmanager and stablehlo modules).

  Deferred: TensorFlow takes seconds to import and only this format needs it. The MLIR context and TF's
  XlaCallModule wrapper are what jax2tf itself uses; a jax or TensorFlow build without them ends in one line.
  """
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow.compiler.tf2xla.python import xla as tfxla  # pylint: disable=g-import-not-at-top
    from jax._src.interpreters.mlir import make_ir_context  # pylint: disable=g-import-not-at-top
    from jax.extend.mlir import ir, passmanager  # pylint: disable=g-import-not-at-top
    from jax.extend.mlir.dialects import stablehlo  # pylint: disable=g-import-not-at-top
    return tf, tfxla.call_module, make_ir_context, ir, passmanager, stablehlo
  except (ImportError, AttributeError) as e:
    raise InputError(f"--format savedmodel needs TensorFlow's XlaCallModule and jax's MLIR bindings: "
                     f"{type(e).__name__}: {e}") from None


def tf_stablehlo(exported: jax.export.Exported) -> tuple[bytes, str]:
  """The exported program as StableHLO that TensorFlow's XlaCallModule reads, and its StableHLO version.

  jax serializes `erf` (in GELU) as a `stablehlo.composite` holding its decomposition, in a StableHLO version newer
  than TensorFlow's, and TensorFlow does not refine the symbolic batch inside composites: the composites become
  calls to their decompositions, inlined, and the program is written for TF_STABLEHLO_REQUIREMENT.
  """
  _, _, make_ir_context, ir, passmanager, stablehlo = _tensorflow()
  stablehlo.register_stablehlo_passes()
  target = stablehlo.get_version_from_compatibility_requirement(
      getattr(stablehlo.StablehloCompatibilityRequirement, TF_STABLEHLO_REQUIREMENT))
  with make_ir_context():
    program = ir.Module.parse(exported.mlir_module())
    passmanager.PassManager.parse(
        "builtin.module(func.func(stablehlo-legalize-composite-to-call),inline,symbol-dce)").run(program.operation)
    return stablehlo.serialize_portable_artifact(program, target), target


def write_savedmodel(out: str, exported: jax.export.Exported, weights: dict[str, np.ndarray]) -> dict[str, Any]:
  """A SavedModel: the weights as variables, `serving_default` (clips uint8 -> logits float32) as an XlaCallModule
  of the exported program (the call jax2tf makes)."""
  tf, call_module, *_ = _tensorflow()
  program, version = tf_stablehlo(exported)
  holder = tf.Module()
  holder.weights = [tf.Variable(value, trainable=False, name=key.replace("/", ".")) for key, value in weights.items()]
  variables = dict(zip(weights, holder.weights))
  clips_aval, logits_aval = exported.in_avals[-1], exported.out_avals[0]

  @tf.function(input_signature=[tf.TensorSpec((None, *clips_aval.shape[1:]), tf.uint8, name="clips")],
               autograph=False)
  def serve(clips):
    arguments = exported.in_tree.flatten_up_to(((variables, clips), {}))
    arguments = [arguments[i] for i in sorted(exported.module_kept_var_idx)]
    logits, = call_module(
        arguments, version=exported.calling_convention_version, module=program, Tout=[tf.float32],
        Sout=[(None, *logits_aval.shape[1:])], platforms=[p.upper() for p in exported.platforms],
        disabled_checks=[str(check) for check in exported.disabled_safety_checks],
        use_shardy_partitioner=jax.config.jax_use_shardy_partitioner)
    return {"logits": logits}

  holder.serve = serve
  tf.saved_model.save(holder, out, signatures={"serving_default": serve})
  return {"signature": "serving_default", "stablehlo_version": version}


def check_out(out: str) -> None:
  if not files.is_missing_or_empty(out):
    raise InputError(f"--out: {out!r} exists and is not an empty folder")


def export_model(model_dir: str, out: str, fmt: str = "stablehlo") -> jax.export.Exported:
  """Exports the model folder `model_dir` to the folder `out` in format `fmt` (see the module docstring)."""
  check_folder(model_dir, "--model")
  if fmt not in FORMATS:
    raise InputError(f"--format: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
  check_out(out)
  card = model_card.read(model_dir)
  module, variables = load_pretrained(model_dir)
  num_frames, crop_size, mean, std = input_recipe(card, module.config)
  weights = flat_weights(variables["params"])
  exported = export_logits(module, weights, clip_shape(module.config, num_frames, crop_size), mean, std)
  logging.info("Exported %s: uint8 clips %s -> float32 logits, forward in %s, for %s.", card.name,
               exported.in_avals[-1].str_short(), jnp.dtype(module.config.dtype).name, ", ".join(PLATFORMS))
  with files.staged_folder(out, last=EXPORT_JSON) as staging:
    written = (write_stablehlo if fmt == "stablehlo" else write_savedmodel)(staging, exported, weights)
    storage.copy_file(storage.join(model_dir, model_card.MODEL_JSON), storage.join(staging, model_card.MODEL_JSON))
    storage.write_text(storage.join(staging, EXPORT_JSON),
                       json.dumps(signature(exported, module.config, mean, std, fmt, **written), indent=1))
  return exported


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; usage: python -m mvit_jax.export --model DIR --out OUT "
                         f"[--format {'|'.join(FORMATS)}]")
  export_model(_MODEL.value, _OUT.value, _FORMAT.value)
  print(f"wrote {_OUT.value} ({_FORMAT.value})")

