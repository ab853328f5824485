"""Benchmarks mvit_jax MViT-B 16x4 against torchvision mvit_v1_b on this CPU, same threads, same run.

    python scripts/bench_model.py [--threads 2] [--repeats 3] [--pool_impl slices] [--profile]

Measures, each in its own subprocess pinned to the same `--threads` cores (so peak RSS is per measurement):
  forward:    batch 1, 16x224x224, float32, eval mode;
  train step: forward + backward (gradients of the cross-entropy w.r.t. all parameters), batch 2, train mode.
Prints median seconds, the ratio torchvision_time / mvit_jax_time (>= 1.0: mvit_jax at least as fast) and each
process's peak RSS. `--profile` also prints mvit_jax's per-block forward+backward times (where the time goes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

NUM_FRAMES, SIZE = 16, 224


def _pin(threads: int) -> None:
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))


def _peak_rss_mb() -> float:
  import resource

  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn, repeats: int) -> tuple[float, float]:
  """(first call seconds, median of `repeats` later calls)."""
  t = time.perf_counter()
  fn()
  first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return first, statistics.median(times)


def run_torch(mode: str, threads: int, repeats: int) -> dict:
  import torch
  from torchvision.models.video import mvit_v1_b

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = mvit_v1_b()
  batch = 1 if mode == "forward" else 2
  x = torch.randn(batch, 3, NUM_FRAMES, SIZE, SIZE)
  labels = torch.zeros(batch, dtype=torch.long)
  if mode == "forward":
    model.eval()

    def fn():
      with torch.no_grad():
        model(x)
  else:
    model.train()

    def fn():
      model.zero_grad(set_to_none=True)
      torch.nn.functional.cross_entropy(model(x), labels).backward()

  first, median = _time(fn, repeats)
  return dict(first_s=first, median_s=median, peak_rss_mb=_peak_rss_mb())


def run_jax(mode: str, threads: int, repeats: int, pool_impl: str) -> dict:
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  from mvit_jax.models import create_model

  model = create_model("mvit_b_16x4", pool_impl=pool_impl)
  batch = 1 if mode == "forward" else 2
  x = jax.random.normal(jax.random.key(1), (batch, NUM_FRAMES, SIZE, SIZE, 3))
  params = jax.jit(lambda x: nn.unbox(model.init(jax.random.key(0), x[:1])["params"]))(x)
  labels = jnp.zeros((batch,), jnp.int32)
  if mode == "forward":
    step = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
    fn = lambda: step(params, x).block_until_ready()
  else:

    def loss(p, x, key):
      logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    step = jax.jit(jax.grad(loss))
    key = jax.random.key(2)
    fn = lambda: jax.block_until_ready(step(params, x, key))

  first, median = _time(fn, repeats)
  return dict(first_s=first, median_s=median, peak_rss_mb=_peak_rss_mb())


def run_profile(threads: int, repeats: int, pool_impl: str) -> dict:
  """Per-block forward+backward seconds of mvit_jax (batch 2, train mode), on the block's real input shapes."""
  import flax.linen as nn
  import jax

  from mvit_jax.models import block_specs, create_model
  from mvit_jax.models.config import pooled_grid
  from mvit_jax.models.layers import MultiScaleBlock

  cfg = create_model("mvit_b_16x4", pool_impl=pool_impl).config
  thw, rows = cfg.token_grid, {}
  for i, spec in enumerate(block_specs(cfg)):
    block = MultiScaleBlock(spec, thw, cfg)
    x = jax.random.normal(jax.random.key(i), (2, 1 + thw[0] * thw[1] * thw[2], spec.dim_in))
    params = jax.jit(lambda x: nn.unbox(block.init(jax.random.key(0), x, False)))(x)
    grad = jax.jit(jax.grad(lambda p, x: block.apply(p, x, True, rngs={"dropout": jax.random.key(1)}).sum(),
                            argnums=(0, 1)))
    _, rows[f"block {i:2d} {spec.dim_in}->{spec.dim_out} grid {thw}"] = _time(
        lambda: jax.block_until_ready(grad(params, x)), repeats)
    thw = pooled_grid(thw, spec.q_kernel, spec.q_stride)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--pool_impl", default="auto")
  parser.add_argument("--profile", action="store_true")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.worker:
    _pin(args.threads)
    framework, mode = args.worker.split(":")
    if framework == "torch":
      result = run_torch(mode, args.threads, args.repeats)
    elif framework == "jax":
      result = run_jax(mode, args.threads, args.repeats, args.pool_impl)
    else:
      result = run_profile(args.threads, args.repeats, args.pool_impl)
    print("RESULT " + json.dumps(result))
    return

  def worker(spec: str) -> dict:
    cmd = [sys.executable, __file__, f"--worker={spec}", f"--threads={args.threads}",
           f"--repeats={args.repeats}", f"--pool_impl={args.pool_impl}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.split("RESULT ", 1)[1])

  print(f"MViT-B 16x4 vs torchvision mvit_v1_b, {args.threads} threads, median of {args.repeats}")
  for mode, desc in (("forward", "forward, batch 1, eval"), ("train", "forward+backward, batch 2, train")):
    tv, mj = worker(f"torch:{mode}"), worker(f"jax:{mode}")
    print(f"{desc:<34} torchvision {tv['median_s']:7.3f} s  mvit_jax {mj['median_s']:7.3f} s  "
          f"ratio {tv['median_s'] / mj['median_s']:.2f}x  (first call: tv {tv['first_s']:.1f} s, "
          f"jax {mj['first_s']:.1f} s incl. compile)  peak RSS: tv {tv['peak_rss_mb']:.0f} MB, "
          f"jax {mj['peak_rss_mb']:.0f} MB")
  if args.profile:
    print("mvit_jax per-block forward+backward, batch 2:")
    for name, seconds in worker("profile:blocks").items():
      print(f"  {name:<44} {seconds * 1e3:8.1f} ms")


if __name__ == "__main__":
  main()
