"""The model card: what inference needs to know about a model folder, in its `model.json`.

A converted-checkpoint folder or a training workdir holds one small JSON file, `model.json`:

    {
     "name": "mvit_b_16x4",                 # create_model variant
     "overrides": {"num_classes": 400},     # config fields that differ from the variant
     "classes": ["abseiling", ...],         # class names, index i names logit i; null when unknown
     "input": {                             # how a video becomes the model's input (InputRecipe below)
      "num_frames": 16, "sampling_rate": 4, "target_fps": 30.0, "segment_sampling": false,
      "short_side": 256, "crop_size": 224, "mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225],
      "num_clips": 5, "num_crops": 1, "use_offset_sampling": true, "multi_label": false},
     "source": {"format": "torchvision", "file": "mvit_v1_b.pth", "sha256": "..."},   # null for a training run
     "verification": {"framework": "torchvision 0.29.1", "logit_rel_l2": 3e-7, "input_shape": [2, 16, 224, 224, 3]}
    }

An action detector (a training workdir of an AVA run) has `"detection": true` in `overrides` (the model takes
person boxes and gives each box K sigmoid scores), `classes` in the label map's id space (entry i names action id
i + 1) and `input.test_view` ("center" or "full": how a frame and its boxes become the model's input,
`data.ava_test_view`); its recipe is the AVA test one: frames `sampling_rate` apart at the frame folders' rate
(`data.ava_fps`) around a keyframe, short side resized to `crop_size`, one view.

Only `name` and `overrides` are needed to rebuild the network (`mvit_jax.models.load_pretrained`); the other keys
may be absent (folders written before them, or a source that says nothing), and then read as None.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import jax.numpy as jnp

from mvit_jax.system import storage
from mvit_jax.system.errors import InputError

MODEL_JSON = "model.json"


def overrides_to_json(overrides: dict[str, Any]) -> dict[str, Any]:
  """Config overrides in JSON form: dtypes by name (tuples become lists)."""
  return {key: jnp.dtype(value).name if key in ("dtype", "param_dtype") else value for key, value in overrides.items()}


def overrides_from_json(overrides: dict[str, Any]) -> dict[str, Any]:
  """Config overrides from JSON: tuple-typed fields back from lists."""
  def to_tuple(v):
    return tuple(to_tuple(x) for x in v) if isinstance(v, list) else v
  return {k: to_tuple(v) for k, v in overrides.items()}


@dataclasses.dataclass(frozen=True)
class InputRecipe:
  """Decode, sampling and normalisation of the model's input; the keys mirror `config.data` (mvit_jax.data.config).

  num_frames frames `sampling_rate` apart at `target_fps` (or one per segment when `segment_sampling`); the short
  side resized to `short_side` pixels, `crop_size` square crops; pixels in [0, 1] normalised with mean / std
  (per RGB channel); evaluation averages num_clips temporal x num_crops spatial views (max-pools their sigmoid
  scores when `multi_label`). Image models have
  num_frames 1 and read image files.
  """
  num_frames: int
  sampling_rate: int
  target_fps: float
  short_side: int
  crop_size: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  num_clips: int = 1
  num_crops: int = 1
  segment_sampling: bool = False
  use_offset_sampling: bool = True  # Test clips from the first to the last possible start.
  multi_label: bool = False  # Per-view sigmoid scores max-pooled over views (Charades), not softmax averaged.
  test_view: str | None = None  # Detectors: 'center' or 'full' (data.ava_test_view); None for classifiers.

  @classmethod
  def from_data_config(cls, data) -> InputRecipe:
    """The evaluation recipe of a trainer `config.data` (an AVA one's: the clip around a keyframe at data.ava_fps,
    short side to crop_size, one view of data.ava_test_view, as mvit_jax.data.ava_transforms.eval_clip makes it)."""
    if data.get('dataset_kind') == 'ava':
      return cls(num_frames=data.num_frames, sampling_rate=data.sampling_rate, target_fps=float(data.ava_fps),
                 short_side=data.crop_size, crop_size=data.crop_size, mean=tuple(data.mean), std=tuple(data.std),
                 test_view=data.ava_test_view)
    return cls(num_frames=data.num_frames, sampling_rate=data.sampling_rate, target_fps=float(data.target_fps),
               short_side=data.test_short_side, crop_size=data.crop_size, mean=tuple(data.mean),
               std=tuple(data.std), num_clips=data.test_num_clips, num_crops=data.test_num_crops,
               segment_sampling=data.segment_sampling, use_offset_sampling=data.use_offset_sampling,
               multi_label=data.multi_label)

  def apply_to(self, data) -> None:
    """Writes the recipe into a `config.data` (ml_collections), for the evaluation loader."""
    data.num_frames = self.num_frames
    data.sampling_rate = self.sampling_rate
    data.target_fps = self.target_fps
    data.test_short_side = self.short_side
    data.crop_size = self.crop_size
    data.mean = tuple(self.mean)
    data.std = tuple(self.std)
    data.test_num_clips = self.num_clips
    data.test_num_crops = self.num_crops
    data.segment_sampling = self.segment_sampling
    data.use_offset_sampling = self.use_offset_sampling
    data.multi_label = self.multi_label
    if self.test_view is not None:
      data.ava_test_view = self.test_view
      data.ava_fps = self.target_fps


@dataclasses.dataclass(frozen=True)
class ModelCard:
  """The parsed `model.json` of a model folder."""
  name: str
  overrides: dict[str, Any]
  classes: tuple[str, ...] | None = None
  input: InputRecipe | None = None
  source: dict[str, Any] | None = None
  verification: dict[str, Any] | None = None

  def to_json(self) -> dict[str, Any]:
    return {
        "name": self.name,
        "overrides": overrides_to_json(self.overrides),
        "classes": None if self.classes is None else list(self.classes),
        "input": None if self.input is None else _recipe_json(self.input),
        "source": self.source,
        "verification": self.verification,
    }


def _recipe_json(recipe: InputRecipe) -> dict[str, Any]:
  """The recipe's fields; a classifier's (test_view None) as before detectors had one."""
  fields = dataclasses.asdict(recipe)
  if fields["test_view"] is None:
    del fields["test_view"]
  return fields


def write(directory: str, card: ModelCard) -> None:
  """Writes `directory/model.json` (a local folder or a URL; atomically: a reader never sees half a file)."""
  storage.write_text(storage.join(directory, MODEL_JSON), json.dumps(card.to_json(), indent=1))


def read(directory: str) -> ModelCard:
  """Reads `directory/model.json` (a local folder or a URL); raises InputError (one line) when there is none or it
  cannot be parsed."""
  path = storage.join(directory, MODEL_JSON)
  if not storage.isfile(path):
    raise InputError(f"{directory}: no {MODEL_JSON}, not a converted checkpoint folder or an mvit_jax workdir")
  try:
    spec = json.loads(storage.read_text(path))
    recipe = spec.get("input")
    if recipe is not None:
      recipe = InputRecipe(**{**recipe, "mean": tuple(recipe["mean"]), "std": tuple(recipe["std"])})
    classes = spec.get("classes")
    return ModelCard(name=spec["name"], overrides=overrides_from_json(spec.get("overrides", {})),
                     classes=None if classes is None else tuple(classes), input=recipe,
                     source=spec.get("source"), verification=spec.get("verification"))
  except (ValueError, KeyError, TypeError) as e:  # JSON syntax, a missing key, an unknown or missing recipe field.
    raise InputError(f"{path}: not a valid model card ({type(e).__name__}: {e})") from None


def sha256(path: str) -> str:
  """Hex SHA-256 of a file (local or URL), read in 1 MiB pieces."""
  digest = hashlib.sha256()
  with storage.open_file(path, "rb") as f:
    for piece in iter(lambda: f.read(1 << 20), b""):
      digest.update(piece)
  return digest.hexdigest()
