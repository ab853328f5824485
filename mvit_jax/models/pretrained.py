"""Model folders in and out: the one place where saved parameters enter or leave an MViT.

A converted-checkpoint folder (written by `python -m mvit_jax.convert`) holds `model.json` (the model card,
`model_card.py`) and `params/` (an orbax checkpoint of the unboxed parameter tree). A training workdir holds the
same `model.json` plus the trainer's orbax checkpoints, `checkpoints/<step>/params`. Parameters are saved in the
block layout of the model that wrote them (`MViTConfig.scan_blocks`) and leave this module in the layout of the
model that reads them (`layout.to_block_layout`). Either folder may be local or a URL (`gs://bucket/...`): orbax
reads and writes both.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp

from mvit_jax.models import model_card
from mvit_jax.models.adapt import fit_pretrained
from mvit_jax.models.config import MViTConfig
from mvit_jax.models.layout import to_block_layout
from mvit_jax.models.mvit import MViT
from mvit_jax.models.variants import create_model
from mvit_jax.system import errors
from mvit_jax.system import storage

PARAMS_DIR = "params"


class NoRestorableCheckpointError(errors.InputError):
  """A checkpoint folder holds checkpoints but none of them restores; the message names the folder."""


def checkpoint_dir(workdir: str) -> str:
  """WORKDIR/checkpoints, where the trainer's orbax CheckpointManager keeps its steps."""
  return storage.join(storage.resolve(workdir), "checkpoints")


def save_params(directory: str, params: Any) -> None:
  """Writes `params` (unboxed tree of arrays) to `directory/params` with orbax."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(storage.resolve(storage.join(directory, PARAMS_DIR)), params)
  checkpointer.wait_until_finished()


def load_pretrained(path: str, **overrides) -> tuple[MViT, dict[str, Any]]:
  """Loads `(module, variables)` from a converted-checkpoint folder or a training workdir (latest step).

  `overrides` replace fields of the recorded config that do not change the parameters (e.g. `scan_blocks`,
  `dtype`, `pool_impl`); the parameters come in the layout of the returned module whatever layout was saved.
  """
  module = read_module(path, **overrides)
  params_dir = storage.join(path, PARAMS_DIR)
  if storage.isdir(params_dir):
    params = ocp.StandardCheckpointer().restore(storage.resolve(params_dir))
  else:
    params = latest_params(path)
  return module, {"params": to_block_layout(params, module.config)}


def read_module(path: str, **overrides) -> MViT:
  """The MViT a model folder's `model.json` describes (its recorded overrides, then `overrides`)."""
  card = model_card.read(path)
  return create_model(card.name, **{**card.overrides, **overrides})


def latest_params(workdir: str):
  """Unboxed params (on the first local device, in the layout they were saved in) of the newest checkpoint in a
  training workdir whose params restore; a damaged newer one is skipped with a warning."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  folder = checkpoint_dir(workdir)
  if not storage.isdir(folder):
    raise FileNotFoundError(f"No checkpoint in {folder}")

  with ocp.CheckpointManager(folder, options=options,
                             item_handlers={"params": ocp.StandardCheckpointHandler()}) as manager:

    def restore_step(step):
      saved = saved_params_tree(manager, step)
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved)
      return manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]

    found = newest_restorable(manager, restore_step)
  if found is None:
    raise FileNotFoundError(f"No checkpoint in {folder}")
  step, params = found
  logging.info("Restored params of step %d from %s", step, folder)
  return params


def saved_params_tree(manager: ocp.CheckpointManager, step: int):
  """The tree of the params saved at `step` (orbax metadata leaves with .shape and .dtype), in its saved layout."""
  metadata = manager.item_metadata(step)["params"]
  return getattr(metadata, "tree", metadata)


def newest_restorable(manager: ocp.CheckpointManager, restore_step: Callable[[int], Any]):
  """(step, restore_step(step)) for the newest step that restores, None without steps; raises
  NoRestorableCheckpointError when there are steps and none restores."""
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return None
  failures = []
  for step in steps:
    try:
      return step, restore_step(step)
    # A damaged checkpoint fails in many ways (tensorstore's plain Exception, JSON, missing keys): each counts.
    except Exception as e:  # pylint: disable=broad-exception-caught
      failures.append(f"step {step}: {_first_line(e)}")
      logging.warning("Checkpoint %s does not restore (%s); trying the previous one.",
                      storage.join(str(manager.directory), str(step)), _first_line(e))
  raise NoRestorableCheckpointError(
      f"No checkpoint in {manager.directory} restores ({'; '.join(failures)}). To start from scratch, move "
      "it away.")


def _first_line(error: Exception, max_chars: int = 200) -> str:
  """'Type: first line of the message', cut at max_chars (tensorstore appends its whole spec to the line)."""
  lines = str(error).strip().splitlines()
  text = f"{type(error).__name__}: {lines[0] if lines else ''}"
  return text if len(text) <= max_chars else text[:max_chars - 3] + "..."


def adapt_pretrained(pretrained: dict[str, Any], target: dict[str, Any], inflate: str = "centre") -> dict[str, Any]:
  """Pretrained params fitted to a target model's params for fine-tuning (`adapt.fit_pretrained`: position tables
  interpolated, a classifier of another class count fresh, an image model's 2-D kernels inflated to the video
  model's by `inflate`, "centre" or "average"); logs the one-line summary of what was done to which leaves.
  Args: unboxed `params` trees of the pretrained model and of the freshly initialised target model, either layout.
  """
  params, report = fit_pretrained(pretrained, target, inflate)
  logging.info("Adapted pretrained params: %s", report)
  return params


def config_overrides(config: MViTConfig, base: MViTConfig) -> dict[str, Any]:
  """Fields of `config` that differ from `base` (what model.json records)."""
  return {
      f.name: getattr(config, f.name)
      for f in dataclasses.fields(MViTConfig)
      if getattr(config, f.name) != getattr(base, f.name)
  }
