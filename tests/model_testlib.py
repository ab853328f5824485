"""Helpers shared by the model tests: parameter counts without allocating, and torch references made exact."""
import math
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp

from mvit_jax.models import create_model


def param_count(name: str, **overrides) -> int:
  """Parameters of create_model(name, **overrides), from shapes alone (jax.eval_shape)."""
  model = create_model(name, **overrides)
  c = model.config
  x = jax.ShapeDtypeStruct((1, c.num_frames, c.input_size, c.input_size, 3), jnp.float32)
  variables = nn.unbox(jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x))
  return sum(math.prod(p.shape) for p in jax.tree.leaves(variables))


def randomise(model, seed: int):
  """Seeded random values added to every tensor of a torch module (norms, biases and position tables included, so
  that a dropped or swapped one cannot hide); returns it in eval mode."""
  import torch  # pylint: disable=g-import-not-at-top  (only the parity tests need torch)
  torch.manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.02 * torch.randn_like(p))
  return model.eval()


def run_convert_cli(fmt: str, arch: str, src, out) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "mvit_jax.convert", f"--from={fmt}", f"--arch={arch}", str(src), str(out)]
  return subprocess.run(cmd, capture_output=True, text=True)
