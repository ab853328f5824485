"""The dense matmuls of the MViT-B 16x4 train step (batch 2), in XLA vs PyTorch on this CPU, same threads.

    python scripts/bench_gemm.py [--threads 2] [--repeats 7]

For each (M tokens x K in -> N out) shape of the model's Dense layers: forward x @ W, input gradient g @ W^T and
weight gradient x^T @ g (which contracts the long token axis of both operands). Each framework runs in its own
subprocess pinned to `--threads` cores; prints medians in ms and torch / jax ratios per kind (>= 1: XLA faster).
Set XLA_FLAGS to compare XLA's CPU dot libraries (e.g. --xla_cpu_experimental_onednn_fusion_type=dot).
"""
import argparse
import json
import subprocess
import sys

from bench_model import _pin, _time  # The sibling script's pinning and timing.

# (rows = batch 2 x tokens, in, out): qkv / fc1 / fc2 of stages 1-3 at 8x56x56, 8x28x28, 8x14x14 tokens, and proj.
SHAPES = [(50178, 96, 288), (50178, 96, 384), (50178, 384, 96), (12546, 192, 576), (12546, 192, 768),
          (12546, 768, 192), (3138, 384, 1152), (3138, 384, 1536), (3138, 1536, 384), (3138, 384, 384)]
KINDS = ('x @ W', 'g @ W^T', 'x^T @ g')


def run(framework: str, threads: int, repeats: int) -> list[list[float]]:
  """[[forward, input grad, weight grad] seconds per shape] in this process."""
  _pin(threads)
  rows = []
  if framework == 'torch':
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)
    for m, k, n in SHAPES:
      x, w, g = torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)
      rows.append([_time(fn, repeats)[1] for fn in (lambda: x @ w, lambda: g @ w.t(), lambda: x.t() @ g)])
  else:
    import jax  # pylint: disable=g-import-not-at-top
    forward, input_grad, weight_grad = (jax.jit(f) for f in (lambda x, w: x @ w, lambda g, w: g @ w.T,
                                                             lambda x, g: x.T @ g))
    for i, (m, k, n) in enumerate(SHAPES):
      x, w, g = (jax.random.normal(jax.random.key(3 * i + j), s) for j, s in enumerate([(m, k), (k, n), (m, n)]))
      rows.append([_time(fn, repeats)[1] for fn in (lambda: forward(x, w).block_until_ready(),
                                                        lambda: input_grad(g, w).block_until_ready(),
                                                        lambda: weight_grad(x, g).block_until_ready())])
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print('RESULT ' + json.dumps(run(args.worker, args.threads, args.repeats)))
    return
  results = {}
  for framework in ('torch', 'jax'):
    out = subprocess.run([sys.executable, __file__, f'--worker={framework}', f'--threads={args.threads}',
                          f'--repeats={args.repeats}'], capture_output=True, text=True, check=True).stdout
    results[framework] = json.loads(out.split('RESULT ', 1)[1])
  print(f"{'M x K -> N':>22}  " + '  '.join(f'{kind:>22}' for kind in KINDS) + '   (ms torch / jax)')
  for shape, tv, mj in zip(SHAPES, results['torch'], results['jax']):
    print(f'{"%d x %d -> %d" % shape:>22}  ' + '  '.join(f'{1e3 * a:10.2f} / {1e3 * b:9.2f}' for a, b in zip(tv, mj)))
  for i, kind in enumerate(KINDS):
    tv, mj = (sum(r[i] for r in results[f]) for f in ('torch', 'jax'))
    print(f'{kind:>8}: torch {1e3 * tv:7.1f} ms, jax {1e3 * mj:7.1f} ms, ratio torch / jax {tv / mj:.2f}')


if __name__ == '__main__':
  main()
