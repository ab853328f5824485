"""Parameter counts and forward GFLOPs per view of every MViT variant, beside the paper's numbers.

    python -m mvit_jax.model_stats [--json] [--variants mvit_b_16x4,mvit_s_16x4]

FLOPs come from XLA's pre-compile cost analysis (`jax.jit(...).lower(...).cost_analysis()`), converted to the
papers' convention: PySlowFast counts with fvcore, where one multiply-add is one "flop" and only matrix
products and convolutions are counted (element-wise ops, softmax and pooling are not). So each
`dot_general` / `conv_general_dilated` of the forward pass is lowered on its own, its XLA flop count (2 per
multiply-add) is halved, and the results are summed. Depthwise pooling is traced in its convolution form and the
blocks unrolled for this count (the formulations compute the same function; a scanned loop's body would be
counted once). `xla_total` is XLA's count for the whole forward.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp

from mvit_jax.models import PAPER_STATS, VARIANTS, create_model, get_config

_MAC_PRIMITIVES = ("dot_general", "conv_general_dilated")

_JSON = flags.DEFINE_bool("json", False, "Print a JSON list of {name, params, gflops, paper_params, paper_gflops}.")
_VARIANTS = flags.DEFINE_list("variants", None, "Variants to report (default: all with paper numbers).")


def _sub_jaxprs(eqn) -> Iterable[jax.extend.core.Jaxpr]:
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def _mac_flops(jaxpr, cache: dict) -> float:
  """XLA flops of every matmul / convolution in `jaxpr` (recursing into sub-jaxprs)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in _MAC_PRIMITIVES:
      avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]
      key = (eqn.primitive.name, tuple((a.shape, str(a.dtype)) for a in avals), repr(sorted(eqn.params.items())))
      if key not in cache:
        fn = lambda *args, eqn=eqn: eqn.primitive.bind(*args, **eqn.params)
        cache[key] = jax.jit(fn).lower(*avals).cost_analysis()["flops"]
      total += cache[key]
    for sub in _sub_jaxprs(eqn):
      total += _mac_flops(sub, cache)
  return total


def model_stats(name: str) -> dict:
  """{name, params, gflops (multiply-adds per view), xla_total_gflops, paper_params, paper_gflops}."""
  model = create_model(name, pool_impl="conv", scan_blocks=False)
  cfg = model.config
  x = jax.ShapeDtypeStruct((1, cfg.num_frames, cfg.input_size, cfg.input_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  variables = nn.unbox(variables)
  params = sum(math.prod(p.shape) for p in jax.tree.leaves(variables))
  forward = lambda v, x: model.apply(v, x, train=False)
  jaxpr = jax.make_jaxpr(forward)(variables, x)
  macs = _mac_flops(jaxpr.jaxpr, {}) / 2
  xla_total = jax.jit(forward).lower(variables, x).cost_analysis()["flops"]
  paper_params, paper_gflops = PAPER_STATS.get(name, (None, None))
  return dict(
      name=name,
      params=params,
      gflops=round(macs / 1e9, 3),
      xla_total_gflops=round(xla_total / 1e9, 3),
      paper_params=paper_params,
      paper_gflops=paper_gflops,
  )


def main(argv):
  del argv
  names = _VARIANTS.value or [n for n in VARIANTS if n in PAPER_STATS]
  for name in names:
    get_config(name)  # An unknown name fails here, before any variant is traced.
  rows = [model_stats(n) for n in names]
  if _JSON.value:
    keys = ("name", "params", "gflops", "paper_params", "paper_gflops")
    print(json.dumps([{k: r[k] for k in keys} for r in rows], indent=1))
    return
  print(f"{'variant':<15} {'params':>12} {'paper (M)':>9} {'GFLOPs':>8} {'paper':>7} {'delta':>7} {'XLA total':>10}")
  for r in rows:
    delta = f"{100 * (r['gflops'] / r['paper_gflops'] - 1):+.1f}%" if r["paper_gflops"] else ""
    print(
        f"{r['name']:<15} {r['params']:>12,} {r['paper_params'] or '':>9} {r['gflops']:>8.2f} "
        f"{r['paper_gflops'] or '':>7} {delta:>7} {r['xla_total_gflops']:>10.2f}"
    )
  print("GFLOPs: multiply-adds per view (fvcore convention, as the papers); XLA total: 2 flops/MAC, all ops.")

