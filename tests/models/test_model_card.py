"""The model card (model.json): round trip, old folders, bad files."""
import json

import numpy as np
import pytest

from mvit_jax import inference
from mvit_jax.models import model_card
from mvit_jax.data import config as data_config_lib
from mvit_jax.system.errors import InputError
from mvit_jax.models import pretrained


def _card():
  data = data_config_lib.default_data_config()
  return model_card.ModelCard(
      name="mvit_tiny", overrides={"num_classes": 3, "dtype": "float32"}, classes=("a", "b", "c"),
      input=model_card.InputRecipe.from_data_config(data), source={"format": "torchvision", "file": "x.pth",
                                                                    "sha256": "00"},
      verification={"framework": "torchvision", "logit_rel_l2": 1e-7})


def test_round_trip(tmp_path):
  card = _card()
  model_card.write(str(tmp_path), card)
  assert model_card.read(str(tmp_path)) == card
  module = pretrained.read_module(str(tmp_path))  # The network is rebuilt from the same file.
  assert module.config.num_classes == 3


def test_recipe_round_trips_through_data_config():
  data = data_config_lib.default_data_config()
  recipe = model_card.InputRecipe(num_frames=32, sampling_rate=3, target_fps=25.0, short_side=320, crop_size=312,
                                  mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.1), num_clips=3, num_crops=3,
                                  use_offset_sampling=False, multi_label=True)
  recipe.apply_to(data)
  assert model_card.InputRecipe.from_data_config(data) == recipe


def test_detector_recipe_is_the_ava_test_view(tmp_path):
  """An AVA data config's recipe: the clip at ava_fps, short side to the crop, one view, its test view; the
  classifier's JSON has no test_view key."""
  data = data_config_lib.default_data_config()
  data.dataset_kind, data.crop_size, data.test_short_side, data.ava_fps = 'ava', 64, 72, 10.0
  data.ava_test_view = 'full'
  data.num_frames, data.sampling_rate, data.test_num_clips = 8, 2, 5
  recipe = model_card.InputRecipe.from_data_config(data)
  assert (recipe.short_side, recipe.target_fps, recipe.num_clips, recipe.num_crops, recipe.test_view) == (
      64, 10.0, 1, 1, 'full')
  card = model_card.ModelCard('mvit_tiny', {'num_classes': 4}, ('walk', 'run', 'jump', 'wave'), recipe)
  model_card.write(str(tmp_path), card)
  assert json.loads((tmp_path / model_card.MODEL_JSON).read_text())['input']['test_view'] == 'full'
  assert model_card.read(str(tmp_path)) == card
  target = data_config_lib.default_data_config()
  recipe.apply_to(target)
  assert (target.ava_test_view, target.ava_fps, target.crop_size) == ('full', 10.0, 64)
  assert 'test_view' not in _card().to_json()['input']


def test_folder_with_name_and_overrides_only(tmp_path):
  # model.json as written before the card's other keys existed.
  (tmp_path / model_card.MODEL_JSON).write_text(json.dumps({"name": "mvit_tiny", "overrides": {"num_classes": 5}}))
  card = model_card.read(str(tmp_path))
  assert (card.name, card.overrides, card.classes, card.input) == ("mvit_tiny", {"num_classes": 5}, None, None)


def test_bad_cards_are_one_line_errors(tmp_path):
  with pytest.raises(InputError, match="no model.json"):
    model_card.read(str(tmp_path))
  path = tmp_path / "model.json"
  path.write_text("{not json")
  with pytest.raises(InputError, match="not a valid model card"):
    model_card.read(str(tmp_path))
  path.write_text(json.dumps({"name": "mvit_tiny", "input": {"num_frames": 4}}))
  with pytest.raises(InputError, match="not a valid model card"):
    model_card.read(str(tmp_path))


def test_sha256(tmp_path):
  path = tmp_path / "f"
  path.write_bytes(b"abc")
  assert model_card.sha256(str(path)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_views_are_averaged_or_max_pooled_for_multi_label_models():
  scores = np.array([[0.2, 0.9], [0.6, 0.1]])
  np.testing.assert_allclose(inference.average_views(scores), [0.4, 0.5])
  np.testing.assert_allclose(inference.average_views(scores, multi_label=True), [0.6, 0.9])
