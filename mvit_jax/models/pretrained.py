"""Saving, loading and adapting pretrained MViT parameters.

A converted-checkpoint folder (written by `python -m mvit_jax.convert`) holds `model.json`
({"name": variant, "overrides": {...}}) and `params/` (an orbax StandardCheckpointer checkpoint of the
unboxed parameter tree). A training workdir holds the same `model.json` plus orbax checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from absl import logging
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mvit_jax.models.adapt import fit_pretrained
from mvit_jax.models.config import MViTConfig
from mvit_jax.models.layout import to_block_layout
from mvit_jax.models.mvit import MViT
from mvit_jax.models.variants import create_model

MODEL_JSON = "model.json"
PARAMS_DIR = "params"


def overrides_to_json(overrides: dict[str, Any]) -> dict[str, Any]:
  """Makes config overrides JSON-serialisable (dtypes by name, tuples as lists)."""
  out = {}
  for key, value in overrides.items():
    if key in ("dtype", "param_dtype"):
      value = jnp.dtype(value).name
    out[key] = value
  return out


def overrides_from_json(overrides: dict[str, Any]) -> dict[str, Any]:
  """Restores tuple-typed config fields from JSON lists."""
  def to_tuple(v):
    return tuple(to_tuple(x) for x in v) if isinstance(v, list) else v
  return {k: to_tuple(v) for k, v in overrides.items()}


def write_model_json(directory: str, name: str, overrides: dict[str, Any]) -> None:
  with open(os.path.join(directory, MODEL_JSON), "w") as f:
    json.dump({"name": name, "overrides": overrides_to_json(overrides)}, f, indent=1, sort_keys=True)


def read_model_json(directory: str, **overrides) -> MViT:
  with open(os.path.join(directory, MODEL_JSON)) as f:
    spec = json.load(f)
  return create_model(spec["name"], **{**overrides_from_json(spec.get("overrides", {})), **overrides})


def save_params(directory: str, params: Any) -> None:
  """Writes `params` (unboxed tree of arrays) to `directory/params` with orbax."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(os.path.join(directory, PARAMS_DIR)), params)
  checkpointer.wait_until_finished()


def load_pretrained(path: str, **overrides) -> tuple[MViT, dict[str, Any]]:
  """Loads `(module, variables)` from a converted-checkpoint folder or a training workdir (latest step).

  `overrides` replace fields of the recorded config that do not change the parameters (e.g. `scan_blocks`,
  `dtype`, `pool_impl`); the parameters come in the layout of the returned module whatever layout was saved.
  """
  if not os.path.exists(os.path.join(path, MODEL_JSON)):
    raise FileNotFoundError(f"{path} has no {MODEL_JSON}: not a converted checkpoint or an mvit_jax workdir")
  module = read_model_json(path, **overrides)
  params_dir = os.path.join(path, PARAMS_DIR)
  if os.path.isdir(params_dir):
    params = ocp.StandardCheckpointer().restore(os.path.abspath(params_dir))
  else:
    from mvit_jax import checkpointing  # Training workdir: the trainer's orbax checkpoints.

    params = checkpointing.latest_params(path)
  return module, {"params": to_block_layout(params, module.config)}


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
