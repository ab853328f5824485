"""Converts torchvision / PySlowFast / PyTorchVideo MViT v1 and torchvision / PySlowFast / official image repository /
timm MViTv2 checkpoints to an mvit_jax checkpoint folder.

    python -m mvit_jax.convert --from torchvision --arch mvit_b_16x4 mvit_v1_b.pth OUT_DIR
    python -m mvit_jax.convert --from torchvision --arch mvitv2_s_16x4 mvit_v2_s.pth OUT_DIR
    python -m mvit_jax.convert --from pyslowfast --arch mvit_b24_32x3 k600.pyth OUT_DIR
    python -m mvit_jax.convert --from pyslowfast --arch mvitv2_s_16x4 MViTv2_S_16x4_k400_f302660347.pyth OUT_DIR
    python -m mvit_jax.convert --from mvit --arch mvitv2_tiny MViTv2_T_in1k.pyth OUT_DIR
    python -m mvit_jax.convert --from timm --arch mvitv2_base mvitv2_base.pth OUT_DIR
    python -m mvit_jax.convert --from pytorchvideo --arch mvit_b_16x4 MVIT_B_16x4.pyth OUT_DIR
    python -m mvit_jax.convert --from pytorchvideo --arch mvit_b16_in1k MVIT_B_16_f292487636.pyth OUT_DIR

Files are read with `torch.load(..., weights_only=True)`, which never runs pickled code: a file that needs
more than tensors and plain containers is refused. PySlowFast files keep the weights under `model_state`, with a
fused `attn.qkv` or separate `attn.q/k/v` (MViTv2: `attn.rel_pos_{h,w,t}`); the official MViTv2 image repository's
files (github.com/facebookresearch/mvit) have PySlowFast's layout with 2-D convolutions, or 5-D ones with a temporal
extent of 1, and no temporal tables; timm files are a state dict with `stages.S.blocks.J` blocks, the
expansion skip as `shortcut_proj_attn` or `shortcut_proj_mlp` and the classifier as `head.fc`. PyTorchVideo files
(its hub `.pyth`, weights under `model_state`, or a state dict of its `create_multiscale_vision_transformers`) name
the stem `patch_embed.patch_model`, the tables `cls_positional_encoding.*`, the final norm `norm_embed` and the
classifier `head.proj`, with separate `attn.q/k/v`; their pooling norms default to eps 1e-5, as in PyTorchVideo
0.1.5 (--pool_norm_eps=1e-6: torchvision's mvit_v1_b). The file's keys and shapes decide what the arch name leaves
open (class count, input size and frames, separable or joint position tables, K/V pooling per block, pooling
kernels, class token, whether channels expand in the attention or the MLP), and a message says where they overrode
it; keys or shapes the architecture cannot hold are an error naming them: one line on stderr and exit status 2.
INPUT and OUT_DIR may be local paths or bucket URLs (`gs://bucket/...`). Nothing is written unless conversion succeeds
(to a bucket, model.json is written last). Load the result with `mvit_jax.models.load_pretrained(OUT_DIR)`.
"""

from __future__ import annotations

import dataclasses
import re

from absl import app, flags
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvit_jax.system import files
from mvit_jax.system import storage
from mvit_jax.inference import recipes
from mvit_jax.tools import convert_card
from mvit_jax.models import model_card
from mvit_jax.system.errors import InputError, did_you_mean
from mvit_jax.models import pretrained
from mvit_jax.models.config import MViTConfig, block_specs
from mvit_jax.models.layout import to_block_layout
from mvit_jax.models.variants import VARIANTS, get_config

_FORMATS = ["torchvision", "pyslowfast", "mvit", "timm", "pytorchvideo"]
_FROM = flags.DEFINE_enum("from", None, _FORMATS,
                          "Checkpoint format (mvit: the official MViTv2 image repository's .pyth).")
_ARCH = flags.DEFINE_string("arch", None, f"Variant: {', '.join(sorted(VARIANTS))}.")
_POOL_NORM_EPS = flags.DEFINE_float(
    "pool_norm_eps", None, "LayerNorm eps after Q/K/V pooling: 1e-6 (default) or 1e-5 for checkpoints trained with "
    "the 2021 PySlowFast code (the original MViT v1 zoo files); --from pytorchvideo defaults to 1e-5.")
_CLASSES = flags.DEFINE_string("classes", None, "Class names for the model card, one per line (line i names class i).")
_VERIFY = flags.DEFINE_bool("verify", False, "Record in the model card the converted logits' relative L2 error against "
                            "the source framework's on a random clip (torchvision files, torchvision installed).")
_FORMAT_NAMES = {"pyslowfast": "PySlowFast", "mvit": "official MViTv2 image repository"}
# PyTorchVideo 0.1.5 builds the pooling LayerNorms with torch's default eps (the code its hub weights were trained
# with did the same); its later code and torchvision's mvit_v1_b use 1e-6.
_PYTORCHVIDEO_POOL_NORM_EPS = 1e-5


class ConversionError(InputError):
  """The input cannot be converted; the message names the offending file, keys or shapes."""


# ---------------------------------------------------------------------------------------------------------------
# Reading.


def load_state_dict(path: str, fmt: str) -> dict[str, np.ndarray]:
  """Reads a checkpoint (local or URL) safely and returns {torch key: float32 numpy array} in torchvision key names."""
  try:
    import torch  # Only the converter needs torch: `pip install mvit_jax[test]` (or torch) brings it.
  except ImportError as e:
    raise ConversionError("reading PyTorch checkpoints needs torch: pip install torch") from e
  if not storage.isfile(path):
    raise ConversionError(f"{path}: no such file")
  with storage.open_file(path, "rb") as f:
    magic = f.read(4)
  # torch.save writes a zip archive (PK..) or, in the legacy format, a pickle (protocol byte 0x80).
  if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
    raise ConversionError(f"{path}: not a PyTorch checkpoint (neither a torch zip archive nor a pickle)")
  with storage.local_file(path) as local:  # torch reads a file by name (a URL's object: a temporary copy).
    try:
      obj = torch.load(local, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or others depending on the damage.
      if "weights_only" in str(e) or "Unsupported global" in str(e):
        raise ConversionError(
            f"{path}: refused, the file needs more than tensors and plain containers to load (it holds pickled "
            f"code or objects): {str(e).splitlines()[0]}") from e
      raise ConversionError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from e
  if fmt in ("pyslowfast", "mvit"):
    if not isinstance(obj, dict) or "model_state" not in obj:
      keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
      raise ConversionError(f"{path}: a {_FORMAT_NAMES[fmt]} checkpoint keeps its weights under 'model_state'; "
                            f"found {keys}")
    obj = obj["model_state"]
  elif fmt == "pytorchvideo" and isinstance(obj, dict) and "model_state" in obj:  # Its hub .pyth; else a state dict.
    obj = obj["model_state"]
  elif isinstance(obj, dict) and "model_state" in obj:
    raise ConversionError(f"{path}: the weights are under 'model_state', as in a PySlowFast, official image repository "
                          f"or PyTorchVideo .pyth (--from pyslowfast, mvit or pytorchvideo); a {fmt} file is a state "
                          "dict")
  if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
    raise ConversionError(f"{path}: not a state dict of tensors")
  state = {k.removeprefix("module."): v.detach().float().numpy() for k, v in obj.items()}
  if fmt == "pytorchvideo":
    return slowfast_to_torchvision(pytorchvideo_to_slowfast(state, path))
  foreign = sorted(k for k in state if _PYTORCHVIDEO_ONLY.match(k))
  if foreign:
    raise ConversionError(f"{path}: {_some(foreign)} are PyTorchVideo key names: convert with --from pytorchvideo")
  if fmt == "timm":
    return slowfast_to_torchvision(timm_to_slowfast(state))
  if fmt == "mvit":
    return slowfast_to_torchvision(squeeze_temporal(state, path))
  return slowfast_to_torchvision(state) if fmt == "pyslowfast" else state


def squeeze_temporal(state: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  """5-D convolution weights (O, I, 1, kh, kw) of the official image repository's files -> 2-D (O, I, kh, kw): its
  image models are 2-D, and its loader squeezes the temporal axis (CHECKPOINT_SQUEEZE_TEMPORAL)."""
  deep = sorted(f"{k} {v.shape}" for k, v in state.items() if v.ndim == 5 and v.shape[2] != 1)
  if deep:
    raise ConversionError(f"{path}: an image model's convolutions have a temporal extent of 1; found {_some(deep)} "
                          "(video MViTv2 files are --from pyslowfast)")
  return {k: v[:, :, 0] if v.ndim == 5 else v for k, v in state.items()}


def _some(keys: list[str], shown: int = 3) -> str:
  """The first `shown` keys, and how many more."""
  return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


# Top-level names only PyTorchVideo's MViT uses; its blocks have PySlowFast's separate-q/k/v names (its code after
# 0.1.5 also registers the pooling modules as `attn._attention_pool_X.{pool,norm}`, so its state dicts hold them twice).
_PYTORCHVIDEO_NAMES = r"patch_embed\.patch_model|cls_positional_encoding|norm_embed|norm_patch_embed|head\.proj"
_PYTORCHVIDEO_ONLY = re.compile(rf"^({_PYTORCHVIDEO_NAMES})\.")
_PYTORCHVIDEO_KEY = re.compile(rf"^({_PYTORCHVIDEO_NAMES}|blocks\.\d+)\.")
_PYTORCHVIDEO_RENAMES = [
    (r"^patch_embed\.patch_model\.", "patch_embed.proj."),
    (r"^cls_positional_encoding\.", ""),
    (r"\.attn\._attention_pool_([qkv])\.pool\.", r".attn.pool_\1."),
    (r"\.attn\._attention_pool_([qkv])\.norm\.", r".attn.norm_\1."),
    (r"^norm_embed\.", "norm."),
    (r"^head\.proj\.", "head.projection."),
]


def pytorchvideo_to_slowfast(state: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  """Renames PyTorchVideo MViT keys to PySlowFast's; a key outside PyTorchVideo's layout, or two names of one
  tensor with different values, is an error."""
  foreign = sorted(k for k in state if not _PYTORCHVIDEO_KEY.match(k))
  if foreign:
    raise ConversionError(f"{path}: not PyTorchVideo's MViT layout (patch_embed.patch_model, cls_positional_encoding, "
                          f"blocks.N, norm_embed, head.proj): found {_some(foreign)}")
  out, source = {}, {}
  for key, value in state.items():
    renamed = key
    for pattern, repl in _PYTORCHVIDEO_RENAMES:
      renamed = re.sub(pattern, repl, renamed)
    if renamed in out and not np.array_equal(out[renamed], value):
      raise ConversionError(f"{path}: {source[renamed]} and {key} name one tensor but differ")
    out[renamed], source[renamed] = value, key
  return out


def timm_to_slowfast(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Renames timm MViTv2 keys to PySlowFast's: `stages.S.blocks.J` to the flat `blocks.N` (stage depths counted
  from the keys), `shortcut_proj_attn` / `shortcut_proj_mlp` to `proj`, `head.fc` to `head.projection`."""
  stage_blocks = {}
  for key in state:
    m = re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.", key)
    if m:
      stage_blocks[int(m[1])] = max(stage_blocks.get(int(m[1]), 0), int(m[2]) + 1)
  first_block = {s: sum(n for t, n in stage_blocks.items() if t < s) for s in stage_blocks}
  out = {}
  for key, value in state.items():
    key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"blocks.{first_block[int(m[1])] + int(m[2])}.", key)
    key = re.sub(r"^(blocks\.\d+)\.shortcut_proj_(attn|mlp)\.", r"\1.proj.", key)
    out[re.sub(r"^head\.fc\.", "head.projection.", key)] = value
  return out


_SLOWFAST_RENAMES = [
    (r"^patch_embed\.proj\.", "conv_proj."),
    (r"^cls_token$", "pos_encoding.class_token"),
    (r"^pos_embed_spatial$", "pos_encoding.spatial_pos"),
    (r"^pos_embed_temporal$", "pos_encoding.temporal_pos"),
    (r"^pos_embed_class$", "pos_encoding.class_pos"),
    (r"^pos_embed$", "pos_encoding.joint_pos"),
    (r"\.attn\.proj\.", ".attn.project.0."),
    (r"\.attn\.pool_([qkv])\.weight$", r".attn.pool_\1.pool.weight"),
    (r"\.attn\.norm_([qkv])\.", r".attn.pool_\1.norm_act.0."),
    (r"\.mlp\.fc1\.", ".mlp.0."),
    (r"\.mlp\.fc2\.", ".mlp.3."),
    (r"^(blocks\.\d+)\.proj\.", r"\1.project."),
    (r"^head\.projection\.", "head.1."),
]


def slowfast_to_torchvision(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Renames PySlowFast keys to torchvision's and fuses separate q/k/v projections into qkv."""
  out = {}
  for key, value in state.items():
    for pattern, repl in _SLOWFAST_RENAMES:
      key = re.sub(pattern, repl, key)
    if key in ("pos_encoding.class_token", "pos_encoding.class_pos"):
      value = value.reshape(-1)  # (1, 1, D) -> (D,)
    elif key.startswith("pos_encoding."):
      value = value.reshape(value.shape[-2:])  # (1, N, D) -> (N, D)
    elif re.search(r"\.attn\.pool_[qkv]\.pool\.weight$", key) and value.ndim == 4:
      value = value[:, :, None]  # Conv2d (hd, 1, kh, kw) of image models -> Conv3d (hd, 1, 1, kh, kw).
    out[key] = value
  for prefix in sorted({k.rsplit(".", 2)[0] for k in out if re.search(r"\.attn\.q\.(weight|bias)$", k)}):
    for kind in ("weight", "bias"):
      parts = [out.pop(f"{prefix}.{p}.{kind}", None) for p in "qkv"]
      if all(p is not None for p in parts):
        out[f"{prefix}.qkv.{kind}"] = np.concatenate(parts, axis=0)
  return out


# ---------------------------------------------------------------------------------------------------------------
# Architecture from the file.


def infer_config(state: dict[str, np.ndarray], arch: str, **base_overrides) -> tuple[MViTConfig, list[str]]:
  """The arch's config with what the file's keys and shapes decide; returns (config, messages)."""
  cfg = get_config(arch, **base_overrides)
  notes, fixed = [], {}
  head = state.get("head.1.weight")
  if head is not None and head.shape[0] != cfg.num_classes:
    fixed["num_classes"] = int(head.shape[0])
  # PyTorchVideo's image MViT keeps separable tables (a temporal one of one row), PySlowFast's a joint one.
  if "pos_encoding.spatial_pos" in state and not cfg.sep_pos_embed:
    fixed["sep_pos_embed"] = True
  elif "pos_encoding.joint_pos" in state and cfg.sep_pos_embed:
    fixed["sep_pos_embed"] = False
  temporal = state.get("pos_encoding.temporal_pos")
  if temporal is not None and not cfg.image and temporal.shape[0] != cfg.token_grid[0]:
    fixed["num_frames"] = int(temporal.shape[0] * cfg.patch_stride[0])
  spatial = state.get("pos_encoding.spatial_pos")
  if spatial is None and "pos_encoding.joint_pos" in state:
    spatial = state["pos_encoding.joint_pos"][1:]
  if spatial is not None:
    side = int(round(np.sqrt(spatial.shape[0])))
    if side * side == spatial.shape[0] and side != cfg.token_grid[1]:
      fixed["input_size"] = side * cfg.patch_stride[1]
  if not cfg.abs_pos:
    fixed.update(_infer_v2(state, cfg))

  specs = block_specs(dataclasses.replace(cfg, **fixed))
  kv_off = tuple(i for i, s in enumerate(specs) if s.kv_kernel is not None and f"blocks.{i}.attn.pool_k.pool.weight" not in state)
  if kv_off:
    fixed["kv_pool_off_blocks"] = kv_off
  kernels = {tuple(v.shape[2:]) for k, v in state.items() if re.search(r"attn\.pool_[qkv]\.pool\.weight$", k)}
  if len(kernels) == 1:
    (kernel,) = kernels
    expected = {s.kv_kernel for s in specs if s.kv_kernel} | {s.q_kernel for s in specs if s.q_kernel}
    if expected != {kernel}:
      fixed["pool_kvq_kernel"] = kernel
  for key, value in fixed.items():
    notes.append(f"the checkpoint decides {key}={value} (arch {arch!r} has {getattr(cfg, key)})")
  return dataclasses.replace(cfg, **fixed), notes


def _infer_v2(state: dict[str, np.ndarray], cfg: MViTConfig) -> dict:
  """What an MViTv2 file decides: class token, built grid (from block 0's relative position tables, 2 n - 1 rows
  for an n-token axis: block 0 pools Q with stride 1), where channels expand (qkv widens with the skip projection
  in the attention, not in v1-style blocks)."""
  fixed = {}
  cls_token = "pos_encoding.class_token" in state
  if cls_token != cfg.cls_token:
    fixed["cls_token"] = cls_token
  rel_t, rel_h = state.get("blocks.0.attn.rel_pos_t"), state.get("blocks.0.attn.rel_pos_h")
  if rel_t is not None and not cfg.image and (rel_t.shape[0] + 1) // 2 != cfg.token_grid[0]:
    fixed["num_frames"] = (rel_t.shape[0] + 1) // 2 * cfg.patch_stride[0]
  if rel_h is not None and (rel_h.shape[0] + 1) // 2 != cfg.token_grid[1]:
    fixed["input_size"] = (rel_h.shape[0] + 1) // 2 * cfg.patch_stride[1]
  projected = sorted((int(m[1]), key) for key in state if (m := re.match(r"^blocks\.(\d+)\.project\.weight$", key)))
  if projected:
    i, key = projected[0]
    qkv = state.get(f"blocks.{i}.attn.qkv.weight")
    in_att = qkv is not None and qkv.shape[0] == 3 * state[key].shape[0]
    if in_att != cfg.dim_mul_in_att:
      fixed["dim_mul_in_att"] = in_att
  return fixed


def torchvision_to_flax(state: dict[str, np.ndarray], cfg: MViTConfig) -> dict[str, np.ndarray]:
  """Maps torchvision-named tensors to the flat Flax param paths of `MViT(cfg)` (layouts transposed, E.4)."""
  out = {}
  for key, value in state.items():
    m = re.match(r"^blocks\.(\d+)\.(.*)$", key)
    if m:
      i, rest = m.groups()
      rest = re.sub(r"^attn\.pool_([qkv])\.norm_act\.0\.", r"attn/pool_\1/norm/", rest)
      if re.match(r"^attn\.pool_[qkv]\.pool\.weight$", rest):
        out[f"blocks_{i}/attn/pool_{rest[10]}/kernel"] = value[:, 0].transpose(1, 2, 3, 0)
        continue
      rest = (rest.replace("attn.project.0.", "attn/proj/").replace("attn.qkv.", "attn/qkv/")
              .replace("mlp.0.", "mlp/fc1/").replace("mlp.3.", "mlp/fc2/").replace("project.", "proj/")
              .replace("attn.rel_pos_", "attn/rel_pos_")
              .replace("norm1.", "norm1/").replace("norm2.", "norm2/"))
      path = f"blocks_{i}/{rest}"
    else:
      path = {
          "conv_proj.weight": "patch_embed/proj/weight",
          "conv_proj.bias": "patch_embed/proj/bias",
          "pos_encoding.class_token": "pos_embed/cls_token",
          "pos_encoding.spatial_pos": "pos_embed/pos_embed_spatial",
          "pos_encoding.temporal_pos": "pos_embed/pos_embed_temporal",
          "pos_encoding.class_pos": "pos_embed/pos_embed_class",
          "pos_encoding.joint_pos": "pos_embed/pos_embed",
          "norm.weight": "norm/weight",
          "norm.bias": "norm/bias",
          "head.1.weight": "head/weight",
          "head.1.bias": "head/bias",
      }.get(key, "unexpected:" + key)
    leaf = path.rsplit("/", 1)[-1]
    if path.startswith("unexpected:"):
      out[path] = value
      continue
    parent = path.rsplit("/", 1)[0]
    if leaf == "weight" and value.ndim == 2:  # Linear (out, in) -> Dense kernel (in, out).
      path, value = parent + "/kernel", value.T
    elif leaf == "weight" and value.ndim == 5:  # Conv3d (O, I, kt, kh, kw) -> (kt, kh, kw, I, O).
      path, value = parent + "/kernel", value.transpose(2, 3, 4, 1, 0)
    elif leaf == "weight" and value.ndim == 4:  # Conv2d (O, I, kh, kw) -> (kh, kw, I, O).
      path, value = parent + "/kernel", value.transpose(2, 3, 1, 0)
    elif leaf == "weight":  # LayerNorm.
      path = parent + "/scale"
    elif leaf in ("cls_token", "pos_embed_class"):
      value = value.reshape(1, -1)
    out[path] = value
  return out


def convert(state: dict[str, np.ndarray], arch: str, **overrides) -> tuple[MViTConfig, dict, list[str]]:
  """Torchvision-named state -> (config, nested Flax params, messages); raises ConversionError on mismatch."""
  cfg, notes = infer_config(state, arch, **overrides)
  flat = torchvision_to_flax(state, cfg)
  from mvit_jax.models.mvit import MViT

  model = MViT(dataclasses.replace(cfg, scan_blocks=False))  # torchvision_to_flax names blocks one by one.
  x = jax.ShapeDtypeStruct((1, cfg.num_frames, cfg.input_size, cfg.input_size, 3), jnp.float32)
  expected = flax.traverse_util.flatten_dict(
      nn.unbox(jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x))["params"], sep="/")
  torch_name = {v: k for k, v in _torch_names(state, cfg).items()}
  missing = sorted(k for k in expected if k not in flat)
  unexpected = sorted(torch_name.get(k, k.removeprefix("unexpected:")) for k in flat if k not in expected)
  wrong = sorted(
      f"{torch_name.get(k, k)} {tuple(flat[k].shape)} (needs {tuple(expected[k].shape)})"
      for k in expected if k in flat and tuple(flat[k].shape) != tuple(expected[k].shape))
  problems = []
  if missing:
    problems.append(f"missing keys for arch {arch!r}: {', '.join(missing)}")
  if unexpected:
    problems.append(f"unexpected keys for arch {arch!r}: {', '.join(unexpected)}")
  if wrong:
    problems.append(f"shapes that arch {arch!r} cannot hold: {', '.join(wrong)}")
  if problems:
    raise ConversionError("; ".join(problems))
  params = flax.traverse_util.unflatten_dict({k: flat[k].astype(np.float32) for k in expected}, sep="/")
  return cfg, to_block_layout(params, cfg), notes


def _torch_names(state, cfg) -> dict[str, str]:
  """Source key for every converted path (for error messages)."""
  return {k: path for k in state for path in torchvision_to_flax({k: state[k]}, cfg)}


def convert_file(fmt: str, arch: str, input_path: str, output_dir: str, *, classes_file: str | None = None,
                 verify: bool = False, **overrides) -> list[str]:
  """Converts INPUT to OUTPUT_DIR (model.json, the model card, + params/); writes nothing when anything fails.

  The card holds the class names (`classes_file`, or torchvision's Kinetics-400 names), the source's input recipe
  (mvit_jax.inference.recipes), the source file and its SHA-256 and, with `verify`, the logit error against the source
  framework.
  """
  if not files.is_missing_or_empty(output_dir):
    raise ConversionError(f"{output_dir} exists and is not empty")
  if fmt == "mvit" and not get_config(arch).image:
    raise ConversionError(f"--from mvit reads the official MViTv2 image models; {arch!r} is a video arch (video "
                          "MViTv2 files are --from pyslowfast)")
  state = load_state_dict(input_path, fmt)
  eps_notes = []
  if fmt == "pytorchvideo" and "pool_norm_eps" not in overrides:
    overrides = dict(overrides, pool_norm_eps=_PYTORCHVIDEO_POOL_NORM_EPS)
    eps_notes.append(f"pool_norm_eps={_PYTORCHVIDEO_POOL_NORM_EPS} as in PyTorchVideo 0.1.5 (--pool_norm_eps=1e-6: "
                     "torchvision's mvit_v1_b)")
  cfg, params, notes = convert(state, arch, **overrides)
  notes = eps_notes + notes
  classes = convert_card.class_names(fmt, cfg.num_classes, classes_file)
  verification = None
  if verify:
    verification, message = convert_card.verify(fmt, arch, input_path, cfg, params)
    notes.append(message)
  card = model_card.ModelCard(
      arch, pretrained.config_overrides(cfg, VARIANTS[arch]), classes, recipes.input_recipe(fmt, arch, cfg),
      {"format": fmt, "file": storage.name(input_path), "sha256": model_card.sha256(input_path)}, verification)
  with files.staged_folder(output_dir, last=model_card.MODEL_JSON) as staging:
    model_card.write(staging, card)
    pretrained.save_params(staging, params)
  return notes


def main(argv):
  if len(argv) != 3 or _FROM.value is None or _ARCH.value is None:
    raise app.UsageError(f"usage: python -m mvit_jax.convert --from {{{','.join(_FORMATS)}}} --arch NAME "
                         "[--classes FILE] [--verify] INPUT OUTPUT_DIR")
  if _ARCH.value not in VARIANTS:
    raise InputError(f"unknown --arch {_ARCH.value!r}{did_you_mean(_ARCH.value, VARIANTS)}; known: "
                     f"{', '.join(VARIANTS)}")
  overrides = {} if _POOL_NORM_EPS.value is None else {"pool_norm_eps": _POOL_NORM_EPS.value}
  notes = convert_file(_FROM.value, _ARCH.value, argv[1], argv[2], classes_file=_CLASSES.value, verify=_VERIFY.value,
                       **overrides)
  for note in notes:
    print(f"note: {note}")
  print(f"wrote {argv[2]} ({_ARCH.value})")

