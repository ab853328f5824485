"""Block parameters in the two layouts of `MViTConfig.scan_blocks`, and the one function that maps between them.

Unrolled: one entry `blocks_{i}` per block. Scanned: each run of consecutive blocks of one shape
(`config.block_groups`) is one entry `blocks_{first}_{last}` whose leaves are the blocks' leaves stacked on a
leading 'layers' axis; a run of one block keeps its `blocks_{i}` entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mvit_jax.models.config import MViTConfig, block_groups

_SCANNED = re.compile(r"blocks_(\d+)_(\d+)")
_BLOCK = re.compile(r"blocks_\d+(_\d+)?")


def _stack(*leaves):
  if isinstance(leaves[0], jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((len(leaves), *leaves[0].shape), leaves[0].dtype)
  if isinstance(leaves[0], np.ndarray):
    return np.stack(leaves)
  return jnp.stack(leaves)


def _take(leaf, index: int):
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype)
  return leaf[index]


def to_block_layout(params: Mapping[str, Any], target: MViTConfig | Mapping[str, Any]) -> dict[str, Any]:
  """The unboxed `params` of an MViT (either layout) in the layout of `target`: the one `MViT(target)` builds for a
  config, the one `target` holds for a parameter tree.

  Leaves may be NumPy or JAX arrays or `jax.ShapeDtypeStruct`s; entries other than blocks pass through.
  """
  unrolled: dict[str, Any] = {}
  for key, value in params.items():
    match = _SCANNED.fullmatch(key)
    if match:
      for j, i in enumerate(range(int(match[1]), int(match[2]) + 1)):
        unrolled[f"blocks_{i}"] = jax.tree.map(lambda leaf, j=j: _take(leaf, j), value)
    else:
      unrolled[key] = value
  if isinstance(target, MViTConfig):
    groups = block_groups(target) if target.scan_blocks else []
  else:
    groups = [(int(m[1]), int(m[2])) for m in map(_SCANNED.fullmatch, target) if m]
  for first, last in groups:
    if first < last:
      blocks = [unrolled.pop(f"blocks_{i}") for i in range(first, last + 1)]
      unrolled[f"blocks_{first}_{last}"] = jax.tree.map(_stack, *blocks)
  return unrolled


def is_block_tree(tree: Any) -> bool:
  """Whether `tree` is a dict of MViT parameters (or of something shaped like them, e.g. Adam's moments)."""
  return isinstance(tree, Mapping) and any(_BLOCK.fullmatch(str(key)) for key in tree)


def map_param_trees(tree: Any, fn: Callable[[Mapping[str, Any]], Any]) -> Any:
  """Applies `fn` to every parameter-shaped dict inside `tree` (params, optimizer moments, gradient sums)."""
  if is_block_tree(tree):
    return fn(tree)
  if isinstance(tree, Mapping):
    return {k: map_param_trees(v, fn) for k, v in tree.items()}
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # NamedTuple (optax states).
    return type(tree)(*(map_param_trees(v, fn) for v in tree))
  if isinstance(tree, (tuple, list)):
    return type(tree)(map_param_trees(v, fn) for v in tree)
  return tree
