"""The CPU-only code paths of the models, each chosen per compile target by `jax.lax.platform_dependent`.

A program lowered for a TPU or a GPU (also from a CPU host: `jax.export`, ahead-of-time compilation) holds none of
this; one lowered for the CPU takes it where it applies. Each piece is kept because it shortens MViT-B 16x4's
step on the CPU end to end (`scripts/bench_model.py --without ...`; figures in docs/performance.md):

* `kernels.depthwise_kernel_grad`: the kernel gradient of the pooling convolutions (train step; XLA's CPU
  reductions over the 27 taps are scalar loops).
* `kernels.softmax` / `kernels.softmax_vjp`: the attention softmax and its backward (forward and train step; XLA's
  CPU loop fusions make one pass over each row per reduction).
* `dense_dot_general`: the dense layers' weight gradient oriented so that XLA's CPU dot copies the narrower
  operand into the layout it needs (train step).

The kernels are C++ (`csrc/`), built by `pip install` when a C++ compiler is there and called as XLA FFI custom
calls; without them, or for other dtypes than float32, the XLA formulation runs on the CPU too.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from mvit_jax.models.cpu import kernels
from mvit_jax.models.cpu.dense import dense_dot_general, matmul

__all__ = ["dense_dot_general", "kernels", "matmul", "on_cpu"]


def on_cpu(kernel: Callable[..., jax.Array], default: Callable[..., jax.Array], *arrays: jax.Array) -> jax.Array:
  """`kernel(*arrays)` in a program compiled for the CPU when the compiled kernels are built and take `arrays`
  (float32); `default(*arrays)` everywhere else."""
  if not kernels.usable(*arrays):
    return default(*arrays)
  return jax.lax.platform_dependent(*arrays, cpu=kernel, default=default)
