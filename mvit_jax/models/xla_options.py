"""XLA compiler options under which mvit_jax models infer fastest on a backend: `jax.jit(..., compiler_options=)`.

CPU: `xla_cpu_experimental_ynn_fusion_type=""` keeps XLA from handing dots (and the element-wise ops around them)
to YNNPACK fusions, so dots run on XLA's Eigen-based dot kernels. Measured on a 2-core Xeon for MViT-B 16x4
(docs/benchmarks.md): YNNPACK's float32 GEMMs are slower for the model's narrow dense layers (e.g. (25089, 192) @
(192, 576): 52 vs 35 ms), and its one advantage, the softmax it fuses between the attention dots, is matched by
`cpu_kernels.softmax`: the batch-1 forward is 4% faster. The train step is not (1.00x against torchvision with the
option, 1.13x without, paired runs), so these options are for inference: the trainer compiles its step without.

The flag is experimental in XLA: where the installed jaxlib does not know it, `compiler_options` returns {} and
logs a warning (checked once, by compiling a one-op function).
"""

from __future__ import annotations

import functools

from absl import logging
import jax
import numpy as np

_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _accepted(options: tuple[tuple[str, str], ...]) -> bool:
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(np.float32(0)).compile()
  except Exception as e:  # pylint: disable=broad-except  (XLA rejects unknown options with a runtime error)
    logging.warning("This jaxlib does not accept the XLA options %s (%s); compiling without them.", options, e)
    return False
  return True


def inference_compiler_options(backend: str | None = None) -> dict[str, str]:
  """Options for `jax.jit(compiler_options=...)` of an mvit_jax model's inference on `backend` ('cpu', 'gpu',
  'tpu'; default: JAX's default backend); {} where there are none."""
  backend = backend or jax.default_backend()
  if backend != "cpu" or not _accepted(tuple(_CPU_OPTIONS.items())):
    return {}
  return dict(_CPU_OPTIONS)
