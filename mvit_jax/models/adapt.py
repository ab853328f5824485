"""Fits pretrained MViT parameters to another model for fine-tuning (`init_from`): the same network at another
input size or class count, or an image MViTv2 starting a video one (MViTv2 §4.3).

Driven by the keys and shapes of the two parameter trees (compared in the unrolled block layout), every leaf of
the target is one of:
- copied: the pretrained leaf has the target's shape;
- inflated: a 2-D convolution kernel (kh, kw, C_in, C_out), or one with a temporal extent of 1 (1, kh, kw, C) as
  an image model's pooling kernels, where the target's kernel spans kt > 1 frames. "centre" puts it in frame
  kt // 2 and zeros elsewhere: every frame of the video stem and pooling then sees only its own frame, as the image
  model does; "average" repeats it / kt over time: on a static clip the sum over time gives back the 2-D response
  away from the temporal padding;
- interpolated: an absolute or relative position table of another length (the token grid differs), linearly
  (as PySlowFast adapts them at load time);
- zeroed: the temporal relative position tables `rel_pos_t` an image model has none of start at zero (MViTv2
  §4.3), so that the video model's attention starts as the image model's on every frame;
- initialised: the target's own fresh value, for a classifier of another class count and for every other kind of
  leaf the pretrained model has none of (a class token an image model lacks);
- and a pretrained class token the target has no place for is dropped.
Anything else that differs (another width, depth or stage layout, a missing block) is an `AdaptError` naming the
key. `fit_pretrained` returns one readable summary of what happened to which leaves.
"""

from __future__ import annotations

import collections
import re
from typing import Any

import flax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mvit_jax.system.errors import InputError
from mvit_jax.models.layers import resize_table
from mvit_jax.models.layout import to_block_layout

INFLATE_MODES = ("centre", "average")
_REL_TABLES = ("rel_pos_h", "rel_pos_w", "rel_pos_t")
_POS_TABLES = ("pos_embed_spatial", "pos_embed_temporal", "pos_embed")
_CLS_TOKEN = "pos_embed/cls_token"
_BLOCK_KEY = re.compile(r"blocks_(\d+)/(.*)")
_MODEL_ORDER = {"patch_embed": 0, "pos_embed": 1, "norm": 3, "head": 4}  # Blocks: 2.
# Summary order; `copied` is only counted.
_ACTIONS = ("inflated", "interpolated", "zeroed", "initialised", "dropped")


class AdaptError(InputError):
  """The pretrained parameters do not fit the target model; the message names the key."""


def _square_grid(rows: int, key: str) -> tuple[int, int]:
  side = int(round(np.sqrt(rows)))
  if side * side != rows:
    raise AdaptError(f"{key}: {rows} positions are not a square grid; cannot interpolate")
  return (side, side)


def _kind(key: str) -> str:
  """The leaf's path inside its block ('blocks_3/attn/rel_pos_t' -> 'attn/rel_pos_t'); other keys as they are."""
  match = _BLOCK_KEY.fullmatch(key)
  return match[2] if match else key


def inflate_kernel(kernel: np.ndarray, shape: tuple[int, ...], mode: str) -> np.ndarray | None:
  """A 2-D conv kernel (kh, kw, ...) or (1, kh, kw, ...) inflated to `shape` (kt, kh, kw, ...) by `mode`
  ("centre" or "average"); None when `kernel` is not such a kernel for `shape`."""
  if len(shape) < 4:  # Conv kernels only: (kt, kh, kw, C) pooling, (kt, kh, kw, C_in, C_out) stem.
    return None
  spatial = kernel[0] if kernel.ndim == len(shape) and kernel.shape[0] == 1 else kernel
  if spatial.shape != tuple(shape[1:]):
    return None
  kt = shape[0]
  if mode == "centre":
    out = np.zeros(shape, kernel.dtype)
    out[kt // 2] = spatial
    return out
  return np.repeat((spatial / kt)[None], kt, axis=0).astype(kernel.dtype)


def _interpolate(key: str, old: np.ndarray, rows: int) -> np.ndarray:
  """Position table `old` resized to `rows` rows: relative and temporal tables along their rows, spatial tables as
  square grids, the joint image table keeping its class row."""
  leaf = key.split("/")[-1]
  if leaf in _REL_TABLES or leaf == "pos_embed_temporal":
    return np.asarray(resize_table(jnp.asarray(old), (old.shape[0],), (rows,)))
  skip = 1 if leaf == "pos_embed" else 0  # The joint table's first row is the class position.
  src_grid, dst_grid = _square_grid(old.shape[0] - skip, key), _square_grid(rows - skip, key)
  grid = np.asarray(resize_table(jnp.asarray(old[skip:]), src_grid, dst_grid))
  return np.concatenate([old[:skip], grid], axis=0)


def _layout_hint(key: str, src: dict[str, Any], dst: dict[str, Any]) -> str:
  """Why a block's leaf may not fit: the models expand channels at other blocks or in another place."""
  match = _BLOCK_KEY.fullmatch(key)
  if match and (f"blocks_{match[1]}/proj/kernel" in src) != (f"blocks_{match[1]}/proj/kernel" in dst):
    return (f" (one model expands channels in block {match[1]}, the other does not: depth, stage layout or "
            "dim_mul_in_att differ)")
  return ""


def _ranges(indices: list[int]) -> str:
  """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
  runs: list[list[int]] = []
  for i in sorted(indices):
    if runs and i == runs[-1][1] + 1:
      runs[-1][1] = i
    else:
      runs.append([i, i])
  return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _describe(keys: list[str]) -> str:
  """Keys grouped by their path inside the blocks, in the model's order (stem, position embedding, blocks, final
  norm, head): 'pos_embed/cls_token, attn/rel_pos_t (blocks 0-15), head/kernel'."""
  blocks: dict[str, list[int]] = collections.defaultdict(list)
  for key in keys:
    match = _BLOCK_KEY.fullmatch(key)
    blocks[_kind(key)] += [int(match[1])] if match else []
  order = lambda kind: (_MODEL_ORDER.get(kind.split("/")[0], 2) if not blocks[kind] else 2, kind)
  return ", ".join(f"{kind} (blocks {_ranges(blocks[kind])})" if blocks[kind] else kind
                   for kind in sorted(blocks, key=order))


def summary(actions: dict[str, list[str]], copied: int, inflate: str) -> str:
  """One line: per action the number of leaves and which ones, then the number copied."""
  parts = []
  for action in _ACTIONS:
    if actions.get(action):
      label = f"inflated ({inflate})" if action == "inflated" else action
      parts.append(f"{label} {len(actions[action])}: {_describe(actions[action])}")
  return "; ".join(parts + [f"copied {copied}"])


def fit_pretrained(pretrained: dict[str, Any], target: dict[str, Any],
                   inflate: str = "centre") -> tuple[dict[str, Any], str]:
  """(params, summary): `pretrained` fitted to the shapes of `target` (see the module docstring).

  Args: unboxed `params` trees of the pretrained model and of the freshly initialised target model, in either
  block layout (`MViTConfig.scan_blocks`); `inflate`: "centre" or "average", how 2-D kernels become 3-D.
  Returns the fitted tree in the target's layout and a one-line account of what was inflated, interpolated,
  zeroed, initialised and dropped.
  """
  if inflate not in INFLATE_MODES:
    raise AdaptError(f"inflate must be 'centre' or 'average', got {inflate!r}")
  target = nn.unbox(target)
  unrolled = {}  # A target layout without scanned runs.
  src = flax.traverse_util.flatten_dict(to_block_layout(nn.unbox(pretrained), unrolled), sep="/")
  dst = flax.traverse_util.flatten_dict(to_block_layout(target, unrolled), sep="/")
  src_kinds = {_kind(key) for key in src}
  out, actions, copied = {}, collections.defaultdict(list), 0
  for key, value in dst.items():
    if key not in src:
      if _kind(key) in src_kinds:  # The pretrained model has this kind of leaf, but not this one.
        raise AdaptError(f"pretrained params have no {key!r}{_layout_hint(key, src, dst)}")
      if key.endswith("/rel_pos_t"):
        out[key], action = np.zeros_like(value), "zeroed"
      else:
        out[key], action = np.asarray(value), "initialised"
    else:
      out[key], action = _fit_leaf(key, np.asarray(src[key]), np.asarray(value), inflate, src, dst)
    if action == "copied":
      copied += 1
    else:
      actions[action].append(key)
  unused = sorted(set(src) - set(dst) - {_CLS_TOKEN})
  if unused:
    raise AdaptError(f"pretrained params {unused} have no place in the target model")
  if _CLS_TOKEN in src and _CLS_TOKEN not in dst:
    actions["dropped"].append(_CLS_TOKEN)
  params = to_block_layout(flax.traverse_util.unflatten_dict(out, sep="/"), target)
  return params, summary(actions, copied, inflate)


def _fit_leaf(key: str, old: np.ndarray, fresh: np.ndarray, inflate: str, src, dst) -> tuple[np.ndarray, str]:
  """(value, action) for target leaf `key` of initial value `fresh`, pretrained value `old`."""
  leaf = key.split("/")[-1]
  if old.shape == fresh.shape:
    return old, "copied"
  if key.startswith("head/"):  # Another class count: the target's fresh classifier.
    return fresh, "initialised"
  if leaf in _REL_TABLES + _POS_TABLES and old.ndim == 2 and old.shape[1] == fresh.shape[1]:
    return _interpolate(key, old, fresh.shape[0]), "interpolated"
  if leaf == "kernel":
    inflated = inflate_kernel(old, fresh.shape, inflate)
    if inflated is not None:
      return inflated, "inflated"
  raise AdaptError(f"pretrained {key!r} has shape {old.shape}, the target model needs {fresh.shape}"
                   f"{_layout_hint(key, src, dst)}")
