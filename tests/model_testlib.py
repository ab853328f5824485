"""Helpers shared by the model tests: parameter counts without allocating, torch references made exact, and
torchvision state dicts in PySlowFast's key names."""
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


def to_slowfast(state, separate_qkv=False):
  """torchvision mvit_v1_b / mvit_v2_s state dict -> PySlowFast key names (fused qkv unless separate_qkv); the
  relative position tables keep their names."""
  import torch  # pylint: disable=g-import-not-at-top  (only the parity tests need torch)
  out = {}
  for k, v in state.items():
    k = (k.replace("conv_proj.", "patch_embed.proj.").replace("attn.project.0.", "attn.proj.")
         .replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.").replace("head.1.", "head.projection."))
    for x in "qkv":
      k = k.replace(f"attn.pool_{x}.pool.weight", f"attn.pool_{x}.weight")
      k = k.replace(f"attn.pool_{x}.norm_act.0.", f"attn.norm_{x}.")
    if ".project." in k and k.startswith("blocks."):
      k = k.replace(".project.", ".proj.")
    if k == "pos_encoding.class_token":
      k, v = "cls_token", v.reshape(1, 1, -1)
    elif k.startswith("pos_encoding."):
      name = {"spatial_pos": "pos_embed_spatial", "temporal_pos": "pos_embed_temporal", "class_pos": "pos_embed_class"}
      k, v = name[k.split(".")[1]], v.reshape(1, -1, v.shape[-1])
    if separate_qkv and k.endswith(("attn.qkv.weight", "attn.qkv.bias")):
      for name, part in zip("qkv", torch.chunk(v, 3, dim=0)):
        out[k.replace("attn.qkv.", f"attn.{name}.")] = part.clone()
      continue
    out[k] = v
  return out
