"""Device mesh, logical-axis rules and batch assembly for the trainer.

The model annotates parameters with logical axis names ('embed', 'mlp', 'qkv', 'heads', 'head_dim', 'classes',
'pos') and activations with ('batch', 'length', 'embed'|'mlp'). `config.sharding_rules` maps them onto the mesh axes
('data', 'fsdp', 'model'); rules are in priority order and a mesh axis already used by an earlier dimension of the
same array is skipped (Flax semantics), so 'batch' -> ('data', 'fsdp') and 'embed' -> 'fsdp' give FSDP for
parameters and pure data parallelism for activations.
"""
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np

MESH_AXES = ('data', 'fsdp', 'model')
BATCH_AXES = ('data', 'fsdp')

def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """Mesh ('data', 'fsdp', 'model') from sizes; one size may be -1 (all remaining devices).

  Axis types are Auto: Flax logical constraints need an Auto mesh (jax.make_mesh defaults to Explicit since 0.9).
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = [int(mesh_config[name]) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f'config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}')
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if known <= 0 or len(devices) % known:
      raise ValueError(f'config.mesh {dict(zip(MESH_AXES, sizes))} does not divide {len(devices)} devices')
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(
        f'config.mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, have {len(devices)}')
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def rules_from_config(rules) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """Normalises config rules (lists from JSON/ConfigDict) into Flax's tuple-of-pairs form."""
  out = []
  for rule in rules:
    if len(rule) != 2:
      raise ValueError(f'config.sharding_rules: each rule is (logical_name, mesh_axes), got {rule!r}')
    name, axes = rule
    if isinstance(axes, (list, tuple)):
      axes = tuple(axes)
      unknown = [a for a in axes if a not in MESH_AXES]
    else:
      unknown = [axes] if axes is not None and axes not in MESH_AXES else []
    if unknown:
      raise ValueError(f'config.sharding_rules: rule {rule!r} names unknown mesh axes {unknown}; use {MESH_AXES}')
    out.append((name, axes))
  return tuple(out)


def _axis_size(mesh, axes) -> int:
  if axes is None:
    return 1
  axes = axes if isinstance(axes, tuple) else (axes,)
  return int(np.prod([mesh.shape[a] for a in axes]))


def fit_spec(spec: jax.P, shape: Sequence[int], mesh: jax.sharding.Mesh) -> jax.P:
  """Drops mesh axes from dimensions they do not divide (jit requires even shardings of inputs/outputs).

  Small or oddly sized parameters (e.g. a 10-class head on fsdp=4) are then replicated along that dimension.
  """
  entries = list(spec) + [None] * (len(shape) - len(spec))
  return jax.P(*[axes if dim % _axis_size(mesh, axes) == 0 else None for axes, dim in zip(entries, shape)])


def param_shardings(abstract_boxed_params, mesh: jax.sharding.Mesh, rules):
  """NamedShardings for a tree of (boxed, abstract) parameters, e.g. from jax.eval_shape(model.init, ...)."""
  specs = nn.get_partition_spec(abstract_boxed_params)
  mesh_specs = jax.tree.map(lambda s: nn.logical_to_mesh_axes(s, rules), specs,
                            is_leaf=lambda x: isinstance(x, jax.P))
  shapes = nn.unbox(abstract_boxed_params)
  return jax.tree.map(lambda spec, x: jax.NamedSharding(mesh, fit_spec(spec, x.shape, mesh)), mesh_specs, shapes,
                      is_leaf=lambda x: isinstance(x, jax.P))


def opt_state_shardings(abstract_opt_state, abstract_params, params_shardings, mesh: jax.sharding.Mesh):
  """Optimizer-state shardings: a leaf whose key path ends with a parameter's path and has its shape gets that
  parameter's sharding; everything else (counts, scalars) is replicated.

  Written by hand because optax.tree_map_params cannot trace through callable weight-decay masks and
  MultiSteps/masked states; suffix matching covers adamw/sgd/MultiSteps/masked states alike.
  """
  by_path = {}
  for (path, x), sharding in zip(jax.tree_util.tree_flatten_with_path(abstract_params)[0],
                                 jax.tree.leaves(params_shardings)):
    by_path[tuple(path)] = (x.shape, sharding)
  replicated = jax.NamedSharding(mesh, jax.P())

  def lookup(path, leaf):
    path = tuple(path)
    for start in range(len(path)):
      hit = by_path.get(path[start:])
      if hit is not None and hit[0] == leaf.shape:
        return hit[1]
    return replicated

  return jax.tree_util.tree_map_with_path(lookup, abstract_opt_state)


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
  """Leading (batch) dimension split over data x fsdp, replicated over 'model'."""
  return jax.NamedSharding(mesh, jax.P(BATCH_AXES))


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Assembles each process's (B_local, ...) arrays into global (B, ...) arrays sharded along the batch."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
