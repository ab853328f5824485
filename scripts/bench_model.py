"""Benchmarks an mvit_jax video model against its torchvision twin on this CPU, same threads, same run.

    python scripts/bench_model.py [--arch mvit_b_16x4] [--threads 2] [--repeats 5] [--rounds 2] [--pool_impl slices]
        [--modes forward,train] [--profile]

`--arch` takes the variants torchvision also builds: mvit_b_16x4 (against `mvit_v1_b`, the default) and
mvitv2_s_16x4 (against `mvit_v2_s`).

Each framework runs in its own process pinned to the same `--threads` cores (in one process the two runtimes'
thread pools slow each other down):
  forward:    batch 1, 16x224x224, float32, eval mode;
  train step: forward + backward (gradients of the cross-entropy w.r.t. all parameters), batch 2, train mode.
The two processes take turns, one step at a time (`--repeats` steps each, who goes first alternating, 0.2 s apart
so thread pools settle), while the other waits idle: on a shared VM whose speed drifts within a minute both
frameworks then see the same machine. `--rounds` repeats this with fresh processes (and JAX compilations).
Prints median seconds over all steps of all rounds, the ratio torchvision_time / mvit_jax_time (>= 1.0: mvit_jax
at least as fast) with each round's ratio, first-call times (JAX's includes compilation), torchvision's peak RSS
(its process, libraries included) and the bytes XLA allocates for the compiled JAX step (arguments + outputs +
temporaries).
`--preload` runs the measuring processes with another malloc (both frameworks alike), e.g. tcmalloc.
`--profile` also prints both frameworks' per-block forward+backward times (where the time goes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# mvit_jax variant -> the torchvision.models.video builder of the same network (both take 16x224x224 clips).
REFERENCES = {"mvit_b_16x4": "mvit_v1_b", "mvitv2_s_16x4": "mvit_v2_s"}
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


def torch_model(arch: str):
  from torchvision.models import video

  return getattr(video, REFERENCES[arch])()


def torch_step(arch: str, mode: str, threads: int):
  import torch

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = torch_model(arch)
  batch = 1 if mode == "forward" else 2
  x = torch.randn(batch, 3, NUM_FRAMES, SIZE, SIZE)
  labels = torch.zeros(batch, dtype=torch.long)
  if mode == "forward":
    model.eval()

    def step():
      with torch.no_grad():
        model(x)
    return step

  model.train()

  def step():
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), labels).backward()
  return step


MODES = {"forward": "forward, batch 1, eval", "train": "forward+backward, batch 2, train"}


def jax_step(arch: str, mode: str, pool_impl: str, remat_policy: str | None):
  """(step function, XLA's bytes for arguments + outputs + temporaries of the compiled step)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  from mvit_jax.models import create_model

  model = create_model(arch, pool_impl=pool_impl, remat_policy=remat_policy)
  batch = 1 if mode == "forward" else 2
  x = jax.random.normal(jax.random.key(1), (batch, NUM_FRAMES, SIZE, SIZE, 3))
  params = jax.jit(lambda x: nn.unbox(model.init(jax.random.key(0), x[:1])["params"]))(x)
  labels = jnp.zeros((batch,), jnp.int32)
  key = jax.random.key(2)
  if mode == "forward":
    fn = jax.jit(lambda p, x, key: model.apply({"params": p}, x, train=False))
  else:

    def loss(p, x, key):
      logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    fn = jax.jit(jax.grad(loss))
  compiled = fn.lower(params, x, key).compile()
  memory = compiled.memory_analysis()
  nbytes = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
  return (lambda: jax.block_until_ready(compiled(params, x, key))), nbytes


def serve_steps(arch: str, framework: str, mode: str, threads: int, pool_impl: str, remat_policy: str | None) -> None:
  """A worker: sets up one framework's step, prints `READY {json}` (set-up + first call, memory figure), then runs
  one step per `step` line on stdin, answering `TIME seconds`, until `quit` (answered with `DONE {json}`)."""
  start = time.perf_counter()
  if framework == "tv":
    fn, memory_mb = torch_step(arch, mode, threads), None
  else:
    fn, nbytes = jax_step(arch, mode, pool_impl, remat_policy)
    memory_mb = nbytes / 2**20
  fn()
  print("READY " + json.dumps(dict(first_s=time.perf_counter() - start)), flush=True)
  for line in sys.stdin:
    if line.strip() != "step":
      break
    t = time.perf_counter()
    fn()
    print(f"TIME {time.perf_counter() - t}", flush=True)
  print("DONE " + json.dumps(dict(memory_mb=_peak_rss_mb() if memory_mb is None else memory_mb)), flush=True)


def run_profile(arch: str, threads: int, repeats: int, pool_impl: str) -> dict:
  """Per-block forward+backward seconds, {name: [torchvision, mvit_jax]} (batch 2, train mode, real input shapes)."""
  import flax.linen as nn
  import jax
  import torch

  from mvit_jax.models import block_specs, create_model
  from mvit_jax.models.config import pooled_grid
  from mvit_jax.models.layers import MultiScaleBlock

  torch.set_num_threads(threads)
  tv_blocks = torch_model(arch).train().blocks
  cfg = create_model(arch, pool_impl=pool_impl).config
  thw, rows = cfg.token_grid, {}
  for i, spec in enumerate(block_specs(cfg)):
    shape = (2, 1 + thw[0] * thw[1] * thw[2], spec.dim_in)
    xt = torch.randn(shape, requires_grad=True)

    def tv_grad(block=tv_blocks[i], thw=thw, xt=xt):
      block.zero_grad(set_to_none=True)
      block(xt, thw)[0].sum().backward()

    block = MultiScaleBlock(spec, thw, cfg)
    x = jax.random.normal(jax.random.key(i), shape)
    params = jax.jit(lambda x: nn.unbox(block.init(jax.random.key(0), x, False)))(x)
    grad = jax.jit(jax.grad(lambda p, x: block.apply(p, x, True, rngs={"dropout": jax.random.key(1)}).sum(),
                            argnums=(0, 1)))
    rows[f"block {i:2d} {spec.dim_in}->{spec.dim_out} grid {thw}"] = [
        _time(tv_grad, repeats)[1], _time(lambda: jax.block_until_ready(grad(params, x)), repeats)[1]]
    thw = pooled_grid(thw, spec.q_kernel, spec.q_stride)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--arch", default="mvit_b_16x4", help=f"mvit_jax variant, one of {', '.join(REFERENCES)}")
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5, help="steps per framework and round")
  parser.add_argument("--pool_impl", default="auto")
  parser.add_argument("--remat_policy", default=None)
  parser.add_argument("--preload", default="", help="LD_PRELOAD for the measuring process (both frameworks), "
                      "e.g. /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 (Debian libtcmalloc-minimal4).")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--modes", default="forward,train", help="comma list of what to time: forward, train")
  parser.add_argument("--profile", action="store_true")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  modes = [mode for mode in args.modes.split(",") if mode]
  if not modes or set(modes) - set(MODES):
    parser.error(f"--modes takes {', '.join(MODES)}, got {args.modes!r}")
  if args.arch not in REFERENCES:
    parser.exit(2, f"{parser.prog}: error: --arch {args.arch!r} has no torchvision reference; benchmarkable: "
                f"{', '.join(REFERENCES)}\n")

  if args.worker:
    _pin(args.threads)
    kind, mode = args.worker.split(":")
    if kind in ("tv", "mj"):
      serve_steps(args.arch, kind, mode, args.threads, args.pool_impl, args.remat_policy)
    else:
      print("RESULT " + json.dumps(run_profile(args.arch, args.threads, args.repeats, args.pool_impl)))
    return

  def command(spec: str) -> list[str]:
    cmd = [sys.executable, __file__, f"--worker={spec}", f"--arch={args.arch}", f"--threads={args.threads}",
           f"--repeats={args.repeats}", f"--pool_impl={args.pool_impl}"]
    return cmd + ([f"--remat_policy={args.remat_policy}"] if args.remat_policy else [])

  env = dict(os.environ, LD_PRELOAD=args.preload) if args.preload else None

  def answer(proc: subprocess.Popen, tag: str) -> str:
    for line in proc.stdout:
      if line.startswith(tag + " "):
        return line[len(tag) + 1:]
    raise RuntimeError(f"benchmark worker {proc.args[2]} exited with {proc.wait()} before answering {tag}")

  def paired_round(mode: str) -> dict:
    """Set-up of both workers one after the other, then `--repeats` alternating steps each."""
    procs, result = {}, {}
    try:
      for framework in ("tv", "mj"):
        procs[framework] = subprocess.Popen(command(f"{framework}:{mode}"), stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True, env=env)
        result[framework] = dict(json.loads(answer(procs[framework], "READY")), steps=[])
      for i in range(args.repeats):
        for framework in (("tv", "mj") if i % 2 == 0 else ("mj", "tv")):
          time.sleep(0.2)
          procs[framework].stdin.write("step\n")
          procs[framework].stdin.flush()
          result[framework]["steps"].append(float(answer(procs[framework], "TIME")))
      for framework, proc in procs.items():
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        result[framework].update(json.loads(answer(proc, "DONE")))
    finally:
      for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    return result

  print(f"{args.arch} vs torchvision {REFERENCES[args.arch]}, {args.threads} threads, {args.repeats} alternating "
        f"steps x {args.rounds} rounds"
        + (f", LD_PRELOAD={args.preload}" if args.preload else ""))
  for mode in modes:
    desc = MODES[mode]
    rounds = [paired_round(mode) for _ in range(args.rounds)]
    tv, mj = ({"step_s": statistics.median(t for r in rounds for t in r[f]["steps"]),
               **{k: statistics.median(r[f][k] for r in rounds) for k in ("first_s", "memory_mb")}}
              for f in ("tv", "mj"))
    per_round = ", ".join(f"{statistics.median(r['tv']['steps']) / statistics.median(r['mj']['steps']):.2f}"
                          for r in rounds)
    print(f"{desc:<34} torchvision {tv['step_s']:7.3f} s  mvit_jax {mj['step_s']:7.3f} s  "
          f"ratio {tv['step_s'] / mj['step_s']:.2f}x (rounds {per_round})  "
          f"(set-up + first call: tv {tv['first_s']:.1f} s, "
          f"jax {mj['first_s']:.1f} s incl. compile)  memory: tv peak RSS {tv['memory_mb']:.0f} MB, "
          f"jax XLA buffers {mj['memory_mb']:.0f} MB", flush=True)
  if args.profile:
    print("per-block forward+backward, batch 2 (ms): torchvision, mvit_jax, ratio")
    out = subprocess.run(command("profile:blocks"), capture_output=True, text=True, check=True, env=env).stdout
    rows = json.loads(out.split("RESULT ", 1)[1])
    for name, (tv, mj) in rows.items():
      print(f"  {name:<44} {tv * 1e3:8.1f} {mj * 1e3:8.1f}  {tv / mj:5.2f}x")
    tv_sum, mj_sum = (sum(r[k] for r in rows.values()) for k in (0, 1))
    print(f"  {'sum of blocks':<44} {tv_sum * 1e3:8.1f} {mj_sum * 1e3:8.1f}  {tv_sum / mj_sum:5.2f}x")


if __name__ == "__main__":
  main()
