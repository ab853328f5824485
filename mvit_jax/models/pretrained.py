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
import flax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mvit_jax.models.config import MViTConfig
from mvit_jax.models.layers import resize_table
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


def _square_grid(rows: int, key: str) -> tuple[int, int]:
  side = int(round(np.sqrt(rows)))
  if side * side != rows:
    raise ValueError(f"{key}: {rows} positions are not a square grid; cannot interpolate")
  return (side, side)


def adapt_pretrained(pretrained: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
  """Fits pretrained params to a target model's params for fine-tuning.

  Position tables are interpolated to the target's token grid (spatial tables are square grids, temporal tables
  1-D; the joint image table keeps its class row), relative position tables linearly along their rows (as
  PySlowFast does at load time); where the classifier shape differs (another class count) the
  target's freshly initialised head is kept. Every other leaf must match in shape. Either may have scanned or
  unrolled blocks (`MViTConfig.scan_blocks`); the result has the target's layout.
  Args: unboxed `params` trees of the pretrained model and of the freshly initialised target model.
  """
  target = nn.unbox(target)
  unrolled = {}  # A target layout without scanned runs.
  src = flax.traverse_util.flatten_dict(to_block_layout(nn.unbox(pretrained), unrolled), sep="/")
  dst = flax.traverse_util.flatten_dict(to_block_layout(target, unrolled), sep="/")
  out = {}
  for key, value in dst.items():
    if key not in src:
      raise KeyError(f"pretrained params have no {key!r}")
    old = np.asarray(src[key])
    leaf = key.split("/")[-1]
    if old.shape == value.shape:
      out[key] = old
    elif key.startswith("head/"):
      logging.info("New classifier %s: %s -> %s (freshly initialised)", key, old.shape, value.shape)
      out[key] = np.asarray(value)
    elif leaf in ("rel_pos_h", "rel_pos_w", "rel_pos_t"):
      logging.info("Interpolating %s %s -> %s", key, old.shape, value.shape)
      out[key] = np.asarray(resize_table(jnp.asarray(old), (old.shape[0],), (value.shape[0],)))
    elif leaf in ("pos_embed_spatial", "pos_embed_temporal", "pos_embed"):
      logging.info("Interpolating %s %s -> %s", key, old.shape, value.shape)
      skip = 1 if leaf == "pos_embed" else 0  # The joint table's first row is the class position.
      if leaf == "pos_embed_temporal":
        src_grid, dst_grid = (old.shape[0],), (value.shape[0],)
      else:
        src_grid, dst_grid = _square_grid(old.shape[0] - skip, key), _square_grid(value.shape[0] - skip, key)
      grid = np.asarray(resize_table(jnp.asarray(old[skip:]), src_grid, dst_grid))
      out[key] = np.concatenate([old[:skip], grid], axis=0)
    else:
      raise ValueError(f"pretrained {key!r} has shape {old.shape}, the target model needs {value.shape}")
  unused = sorted(set(src) - set(dst))
  if unused:
    raise KeyError(f"pretrained params {unused} have no place in the target model")
  return to_block_layout(flax.traverse_util.unflatten_dict(out, sep="/"), target)


def config_overrides(config: MViTConfig, base: MViTConfig) -> dict[str, Any]:
  """Fields of `config` that differ from `base` (what model.json records)."""
  return {
      f.name: getattr(config, f.name)
      for f in dataclasses.fields(MViTConfig)
      if getattr(config, f.name) != getattr(base, f.name)
  }
